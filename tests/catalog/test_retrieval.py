"""The embedded lexical index: English, Japanese, misspelled, filtered."""

from __future__ import annotations

import pytest

from catalog.models import Product
from catalog.retrieval import Filters, get_index
from chat.entities import resolve

pytestmark = pytest.mark.django_db


@pytest.fixture
def index(transactional_db: None):  # type: ignore[no-untyped-def]
    from catalog.services import demo_catalog_load

    demo_catalog_load()
    return get_index()


def _title(product_id: int) -> str:
    return Product.objects.get(id=product_id).title_en


class RetrievalTests:
    def test_english_title_ranks_first(self, index) -> None:  # type: ignore[no-untyped-def]
        assert _title(index.search("Attack on Titan", limit=1)[0].product_id) == "Attack on Titan"

    def test_japanese_title_ranks_first(self, index) -> None:  # type: ignore[no-untyped-def]
        assert _title(index.search("進撃の巨人", limit=1)[0].product_id) == "Attack on Titan"

    def test_author_finds_their_series(self, index) -> None:  # type: ignore[no-untyped-def]
        titles = {_title(r.product_id) for r in index.search("Akira Toriyama", limit=3)}
        assert "Dragon Ball" in titles

    def test_filters_keep_only_matching_series(self, index) -> None:  # type: ignore[no-untyped-def]
        results = index.search("manga", limit=10, filters=Filters(demographic="seinen", status="completed"))
        assert results
        for result in results:
            product = Product.objects.get(id=result.product_id)
            assert (product.demographic, product.status) == ("seinen", "completed")

    def test_similar_series_share_genres_and_exclude_the_seed(self, index) -> None:  # type: ignore[no-untyped-def]
        seed = Product.objects.get(title_en="Dragon Ball")
        similar = [Product.objects.get(id=r.product_id) for r in index.similar(seed.id, limit=3)]
        assert len(similar) == 3 and seed not in similar
        assert all(set(p.genres) & set(seed.genres) for p in similar)

    def test_index_follows_catalog_changes(self, index) -> None:  # type: ignore[no-untyped-def]
        from catalog.retrieval import index_holder

        Product.objects.create(sku="B0TESTNEW1", title_en="Zebra Detectives of Kyoto", price_yen=500)
        index_holder.reset()
        assert _title(get_index().search("zebra detectives", limit=1)[0].product_id) == "Zebra Detectives of Kyoto"


class EntityTests:
    @pytest.mark.parametrize(("text", "expected"), [
        ("Is Naruto in stock?", "Naruto"),
        ("tell me about ナルト", "Naruto"),
        ("how many volumes does Narutoo have", "Naruto"),
        ("is atack on titan finished?", "Attack on Titan"),
        ("鬼滅の刃は何巻まで？", "Demon Slayer: Kimetsu no Yaiba"),
        ("do you have kimetsu", "Demon Slayer: Kimetsu no Yaiba"),
    ])
    def test_titles_resolve_exactly_partly_misspelled_and_in_japanese(self, index, text: str, expected: str) -> None:  # type: ignore[no-untyped-def]
        entities = resolve(text, index=index, shown=[])
        assert entities.product_ids and _title(entities.product_ids[0]) == expected

    @pytest.mark.parametrize(("text", "position"), [
        ("tell me more about the first one", 0), ("what about the second series?", 1), ("and the last one", 2),
        ("is that one in stock", 0), ("それは何巻ですか", 0), ("2番目の作品について教えて", 1),
    ])
    def test_references_resolve_against_the_previous_answer(self, index, text: str, position: int) -> None:  # type: ignore[no-untyped-def]
        shown = [[101, 102, 103], [7, 8]]
        assert resolve(text, index=index, shown=shown).referenced_ids == [shown[0][position]]

    def test_order_ids_and_volumes_are_read(self, index) -> None:  # type: ignore[no-untyped-def]
        entities = resolve("where is order MA-10234 with volume 12?", index=index, shown=[])
        assert entities.order_ids == ["MA-10234"] and entities.volume == 12
        assert resolve("ワンピース 105巻", index=index, shown=[]).volume == 105


class ProductPageContextTests:
    def test_the_current_page_product_is_found_by_sku_whatever_the_catalog_size(self, index) -> None:  # type: ignore[no-untyped-def]
        from chat.assembly import _current_product_id

        naruto = Product.objects.get(title_en="Naruto")
        assert _current_product_id({"current_asin": naruto.sku}, index) == naruto.id
        assert _current_product_id({"current_asin": "B0UNKNOWN0"}, index) is None
        assert _current_product_id({}, index) is None
