from django.core.management.base import BaseCommand, CommandError

from catalog.services import CatalogImportError, demo_catalog_load


class Command(BaseCommand):
    help = "Load or refresh the 187-series demo catalog (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = demo_catalog_load()
        except CatalogImportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Demo catalog: {result}"))
