"""Writes to the catalog: the demo catalog and the MADB import."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator

from django.db import transaction
from django.utils import timezone

from .models import CatalogSource, Demographic, Product, Promotion, ReviewSummary, SeriesStatus
from .retrieval import catalog_version_bump, index_holder

DATA_DIR = Path(__file__).resolve().parent / "data"
BESTSELLERS_CSV = DATA_DIR / "best_selling_manga.csv"
ENRICHMENT_CSV = DATA_DIR / "series_enrichment.csv"
MADB_CSV = DATA_DIR / "madb_manga_magazine_serializations.csv"

# Demo prices per volume (yen, tax included), by demographic: typical tankōbon prices.
BASE_PRICE_YEN = {"shonen": 528, "shojo": 528, "children": 495, "seinen": 748, "josei": 748, "": 660}


class CatalogImportError(Exception):
    """The input file is missing or not in the expected shape."""


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def sku_for(key: str) -> str:
    """A stable ASIN-like id: the same series gets the same SKU on every machine."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    value = _digest(key)
    chars = []
    for _ in range(8):
        value, rem = divmod(value, len(alphabet))
        chars.append(alphabet[rem])
    return "B0" + "".join(chars)


def _demo_price(key: str, demographic: str) -> int:
    return BASE_PRICE_YEN.get(demographic, 660) + 11 * (_digest("price:" + key) % 10)


def _demo_stock(key: str) -> int:
    roll = _digest("stock:" + key) % 100
    return 0 if roll < 8 else 3 + roll % 45  # about one series in twelve is sold out


def _demo_rating(key: str) -> Decimal:
    return Decimal(380 + _digest("rating:" + key) % 115) / 100


def _read_csv(path: Path, required: set[str]) -> list[dict[str, str]]:
    if not path.exists():
        raise CatalogImportError(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise CatalogImportError(f"{path.name} lacks the columns {sorted(missing)}")
        return list(reader)


def _int_or_none(raw: str) -> int | None:
    raw = (raw or "").strip()
    return int(raw) if raw.isdigit() else None


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return (f"{self.created} created, {self.updated} updated, "
                f"{self.unchanged} unchanged, {self.skipped} skipped")


def demo_catalog_load(*, bestsellers: Path = BESTSELLERS_CSV, enrichment: Path = ENRICHMENT_CSV) -> ImportResult:
    """Load (or refresh) the 187-series demo catalog with promotions and reviews. Idempotent."""
    rows = _read_csv(bestsellers, {"title_en", "authors", "publisher", "demographic", "volumes",
                                   "start_year", "end_year", "status", "approx_sales_millions"})
    extra = {row["title_en"]: row for row in _read_csv(enrichment, {"title_en", "title_ja", "genres", "description"})}
    created = updated = 0
    with transaction.atomic():
        for row in rows:
            title = row["title_en"].strip()
            demographic = row["demographic"].strip() if row["demographic"].strip() in Demographic.values else ""
            enrich = extra.get(title, {})
            defaults = {
                "title_en": title,
                "title_ja": (enrich.get("title_ja") or "").strip(),
                "authors": [a.strip() for a in row["authors"].split(";") if a.strip()],
                "publisher": row["publisher"].strip(),
                "demographic": demographic,
                "genres": [g.strip() for g in (enrich.get("genres") or "").split(";") if g.strip()],
                "volumes": _int_or_none(row["volumes"]),
                "status": row["status"].strip() if row["status"].strip() in SeriesStatus.values else "",
                "start_year": _int_or_none(row["start_year"]),
                "end_year": _int_or_none(row["end_year"]),
                "description": (enrich.get("description") or "").strip(),
                "sales_millions": Decimal(row["approx_sales_millions"]) if row["approx_sales_millions"].strip() else None,
                "source": CatalogSource.BESTSELLERS,
            }
            product, was_created = Product.objects.get_or_create(
                sku=sku_for("bestsellers:" + title),
                defaults={**defaults, "price_yen": _demo_price(title, demographic),
                          "stock": _demo_stock(title), "rating": _demo_rating(title)},
            )
            if was_created:
                created += 1
                continue
            changed = [name for name, value in defaults.items() if getattr(product, name) != value]
            if changed:
                for name in changed:
                    setattr(product, name, defaults[name])
                product.save(update_fields=changed)
                updated += 1
        _demo_promotions_load()
        _demo_reviews_load()
    transaction.on_commit(catalog_version_bump)
    return ImportResult(created=created, updated=updated, unchanged=len(rows) - created - updated)


def _demo_promotions_load() -> None:
    now = timezone.now()
    promotions = [
        ("shonen-week", "Shōnen Week", "10% off every shōnen series.", 10, Demographic.SHONEN, 1, []),
        ("seinen-bundle", "Seinen bundle", "15% off seinen series when you buy 3 or more volumes.", 15,
         Demographic.SEINEN, 3, []),
        ("classics", "Timeless classics", "20% off selected completed classics.", 20, "", 1,
         ["Dragon Ball", "Slam Dunk", "Astro Boy", "Doraemon"]),
    ]
    for code, title, description, percent, demographic, min_volumes, titles in promotions:
        promotion, _ = Promotion.objects.update_or_create(
            code=code,
            defaults={"title": title, "description": description, "discount_percent": percent,
                      "demographic": demographic, "min_volumes": min_volumes, "active": True,
                      "starts_at": now - timedelta(days=1), "ends_at": now + timedelta(days=60)},
        )
        if titles:
            promotion.products.set(Product.objects.filter(title_en__in=titles))


# Demo review summaries: short, plain summaries of what readers commonly say.
DEMO_REVIEWS = {
    "One Piece": "Readers praise the long-running world-building and the crew's friendships; some find the later arcs slow to start.",
    "Dragon Ball": "Loved for its fast, funny fights and adventure; readers note the art gets sharper as the series goes on.",
    "Naruto": "Readers enjoy the ninja battles and the theme of perseverance; the middle arcs are called uneven by some.",
    "Slam Dunk": "Often called the best sports manga: readers praise the game pacing and the characters' growth.",
    "Attack on Titan": "Readers praise the tension and the mysteries; early art is rougher than later volumes.",
    "Demon Slayer: Kimetsu no Yaiba": "Readers like the brisk pace, the sibling bond and the striking sword fights.",
    "Case Closed / Detective Conan": "Readers enjoy the self-contained mysteries; the overarching plot advances slowly.",
    "Doraemon": "A family favourite: short, gentle and funny chapters that suit younger readers.",
    "Jujutsu Kaisen": "Readers praise the inventive curse-technique fights; some find the later arcs grim.",
    "My Hero Academia": "Readers like the hero-school setting and the large cast; the finale arcs are fight-heavy.",
    "Death Note": "Praised as a tight cat-and-mouse thriller; readers debate the second half.",
    "Fullmetal Alchemist": "Widely praised for its tight plot, worldbuilding and satisfying ending.",
}


def _demo_reviews_load() -> None:
    by_title = {p.title_en: p for p in Product.objects.filter(title_en__in=DEMO_REVIEWS)}
    for title, summary in DEMO_REVIEWS.items():
        product = by_title.get(title)
        if product is None:
            continue
        ReviewSummary.objects.update_or_create(
            product=product,
            defaults={"summary": summary, "average_rating": product.rating or Decimal("4.5"),
                      "review_count": 40 + _digest("reviews:" + title) % 900},
        )


MADB_COLUMNS = {"madb_id", "title_ja", "title_kana", "creators_ja", "date_published"}


def _madb_rows(path: Path) -> Iterator[dict[str, str]]:
    if not path.exists():
        raise CatalogImportError(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = MADB_COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise CatalogImportError(f"{path.name} lacks the columns {sorted(missing)}")
        yield from reader


def madb_count(path: Path = MADB_CSV) -> int:
    return sum(1 for _ in _madb_rows(path))


def madb_import(*, path: Path = MADB_CSV, batch_size: int = 2000,
                progress: Callable[[int], None] | None = None) -> ImportResult:
    """Import the MADB serialization records as Japanese-only products. Idempotent.

    Re-runs update changed records and create new ones; nothing is duplicated,
    because each record is keyed on its MADB id.
    """
    created = updated = unchanged = skipped = 0
    fields = ["title_ja", "title_kana", "authors", "start_year", "description"]
    batch: list[Product] = []

    def flush() -> None:
        nonlocal created, updated, unchanged
        existing = {p.madb_id: p for p in Product.objects.filter(madb_id__in=[b.madb_id for b in batch])}
        to_create, to_update = [], []
        for item in batch:
            current = existing.get(item.madb_id)
            if current is None:
                to_create.append(item)
            elif any(getattr(current, f) != getattr(item, f) for f in fields):
                for f in fields:
                    setattr(current, f, getattr(item, f))
                to_update.append(current)
            else:
                unchanged += 1
        for product in to_create + to_update:
            product.search_text = product.build_search_text()  # bulk writes skip save()
        with transaction.atomic():
            Product.objects.bulk_create(to_create, batch_size=500)
            Product.objects.bulk_update(to_update, [*fields, "search_text"], batch_size=500)
        created += len(to_create)
        updated += len(to_update)
        if progress:
            progress(len(batch))
        batch.clear()

    for row in _madb_rows(path):
        madb_id, title_ja = row["madb_id"].strip(), row["title_ja"].strip()
        if not madb_id or not title_ja:
            skipped += 1
            if progress:
                progress(1)
            continue
        creators = [c.strip() for c in row["creators_ja"].split("|") if c.strip()]
        year = row["date_published"][:4]
        start_year = int(year) if year.isdigit() else None
        original = (row.get("original_work_creator") or "").strip()
        description = f"{row.get('note') or ''}".strip()
        if original:
            description = f"原作: {original}. {description}".strip()
        batch.append(Product(
            sku=sku_for("madb:" + madb_id), madb_id=madb_id, title_ja=title_ja,
            title_kana=row["title_kana"].strip(), authors=creators, start_year=start_year,
            description=description[:1000], price_yen=_demo_price(madb_id, ""),
            stock=_demo_stock(madb_id), source=CatalogSource.MADB,
        ))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    catalog_version_bump()
    index_holder.reset()
    return ImportResult(created=created, updated=updated, unchanged=unchanged, skipped=skipped)
