from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.services import MADB_CSV, CatalogImportError, madb_count, madb_import


class Command(BaseCommand):
    help = "Import the 30,023 MADB serialization records as a large Japanese catalog (idempotent)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--path", type=Path, default=MADB_CSV, help="CSV file (default: the bundled copy).")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: object, **options: object) -> None:
        path: Path = options["path"]  # type: ignore[assignment]
        try:
            total = madb_count(path)
            with tqdm(total=total, unit="rec", disable=bool(options["no_progress"]),
                      file=self.stderr._out) as bar:  # type: ignore[attr-defined]
                result = madb_import(path=path, progress=bar.update)
        except CatalogImportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"MADB import: {result}"))
