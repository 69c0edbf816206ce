"""Loading the demo catalog and importing MADB records."""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import CatalogSource, Product, Promotion, ReviewSummary
from catalog.services import MADB_CSV, demo_catalog_load, madb_import

pytestmark = pytest.mark.django_db


class DemoCatalogTests:
    def test_loads_all_187_series_with_enrichment_and_is_idempotent(self) -> None:
        first = demo_catalog_load()
        assert (first.created, first.updated) == (187, 0)
        again = demo_catalog_load()
        assert (again.created, again.updated, again.unchanged) == (0, 0, 187)
        assert Product.objects.filter(source=CatalogSource.BESTSELLERS).count() == 187

    def test_series_carry_japanese_titles_genres_descriptions_and_store_data(self) -> None:
        demo_catalog_load()
        one_piece = Product.objects.get(title_en="One Piece")
        assert one_piece.authors == ["Eiichiro Oda"] and one_piece.demographic == "shonen"
        assert one_piece.title_ja and one_piece.genres and one_piece.description
        assert one_piece.price_yen > 0 and one_piece.sku.startswith("B0") and len(one_piece.sku) == 10
        described = Product.objects.exclude(description="").exclude(genres=[]).count()
        assert described == 187
        assert Promotion.objects.filter(active=True).count() >= 3
        assert ReviewSummary.objects.count() >= 10

    def test_skus_are_stable_across_loads(self) -> None:
        demo_catalog_load()
        before = dict(Product.objects.values_list("title_en", "sku"))
        Product.objects.all().delete()
        demo_catalog_load()
        assert dict(Product.objects.values_list("title_en", "sku")) == before


def _madb_sample(tmp_path: Path, rows: int) -> Path:
    with MADB_CSV.open(encoding="utf-8") as source:
        reader = csv.reader(source)
        lines = [next(reader) for _ in range(rows + 1)]
    path = tmp_path / "madb.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows(lines)
    return path


class MadbImportTests:
    def test_import_is_idempotent_and_updates_changed_records(self, tmp_path: Path) -> None:
        path = _madb_sample(tmp_path, 300)
        first = madb_import(path=path, batch_size=100)
        assert first.created + first.skipped == 300 and first.created > 250
        assert madb_import(path=path, batch_size=100).created == 0

        text = path.read_text(encoding="utf-8").splitlines()
        header, row = text[0], next(csv.reader([text[1]]))
        row[1] = row[1] + "（改題）"
        buffer = StringIO()
        csv.writer(buffer).writerow(row)
        path.write_text("\n".join([header, buffer.getvalue().strip(), *text[2:]]) + "\n", encoding="utf-8")
        result = madb_import(path=path, batch_size=100)
        assert (result.created, result.updated) == (0, 1)
        assert Product.objects.get(madb_id=row[0]).title_ja == row[1]

    def test_command_reports_progress_and_result(self, tmp_path: Path) -> None:
        out, err = StringIO(), StringIO()
        call_command("import_madb", "--path", str(_madb_sample(tmp_path, 50)), stdout=out, stderr=err)
        assert "MADB import:" in out.getvalue() and "created" in out.getvalue()
        assert "50/50" in err.getvalue()

    def test_bad_file_is_a_clear_error(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.csv"
        bad.write_text("id,name\n1,x\n", encoding="utf-8")
        with pytest.raises(CommandError, match="lacks the columns"):
            call_command("import_madb", "--path", str(bad), "--no-progress")
        with pytest.raises(CommandError, match="does not exist"):
            call_command("import_madb", "--path", str(tmp_path / "missing.csv"), "--no-progress")
