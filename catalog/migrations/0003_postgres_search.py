"""Fill the search terms, and on PostgreSQL index them for full-text search and titles for trigrams."""

from django.db import migrations


def fill_search_text(apps, schema_editor):  # type: ignore[no-untyped-def]
    from catalog.text import search_document

    Product = apps.get_model("catalog", "Product")
    batch = []
    for product in Product.objects.all().iterator(chunk_size=2000):
        product.search_text = search_document(product.title_en, product.title_ja, product.title_kana,
                                              " ".join(product.authors or []), " ".join(product.genres or []),
                                              product.demographic, product.publisher, product.description)
        batch.append(product)
        if len(batch) >= 2000:
            Product.objects.bulk_update(batch, ["search_text"])
            batch = []
    if batch:
        Product.objects.bulk_update(batch, ["search_text"])


POSTGRES_SQL = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS catalog_product_search_fts ON catalog_product USING GIN (to_tsvector('simple', search_text))",
    "CREATE INDEX IF NOT EXISTS catalog_product_title_en_trgm ON catalog_product USING GIN (lower(title_en) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS catalog_product_title_ja_trgm ON catalog_product USING GIN (title_ja gin_trgm_ops)",
]


def postgres_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return  # the embedded index serves SQLite
    for statement in POSTGRES_SQL:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_search_text")]
    operations = [
        migrations.RunPython(fill_search_text, migrations.RunPython.noop),
        migrations.RunPython(postgres_indexes, migrations.RunPython.noop),
    ]
