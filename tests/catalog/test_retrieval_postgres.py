"""Retrieval with PostgreSQL full-text search (the PostgreSQL pass of make test)."""

from __future__ import annotations

import pytest

from catalog.models import Product
from catalog.retrieval import Filters, postgres_search

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def catalog(db: None) -> None:
    from catalog.services import demo_catalog_load

    demo_catalog_load()


def _titles(results) -> list[str]:  # type: ignore[no-untyped-def]
    return [Product.objects.get(id=r.product_id).title_en for r in results]


class PostgresRetrievalTests:
    def test_english_title_ranks_first(self) -> None:
        assert _titles(postgres_search("Attack on Titan", limit=3))[0] == "Attack on Titan"

    def test_japanese_title_ranks_first(self) -> None:
        assert _titles(postgres_search("進撃の巨人", limit=3))[0] == "Attack on Titan"
        assert _titles(postgres_search("ドラゴンボールの作者は？", limit=3))[0] == "Dragon Ball"

    def test_misspelled_title_is_found(self) -> None:
        assert "Fullmetal Alchemist" in _titles(postgres_search("fulmetal alchemst", limit=3))

    def test_filters_apply(self) -> None:
        results = postgres_search("drama", limit=10, filters=Filters(demographic="seinen", genres=frozenset({"drama"})))
        assert results
        for product in (Product.objects.get(id=r.product_id) for r in results):
            assert product.demographic == "seinen" and "drama" in product.genres

    def test_auto_uses_postgres_here(self, settings, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
        from catalog.retrieval import search

        settings.RETRIEVAL_BACKEND = "auto"
        with django_assert_num_queries(1):
            found = search("One Piece", limit=1)
        assert _titles(found) == ["One Piece"]

    def test_the_chat_searches_the_index_in_memory_by_default(self, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
        # The customer's path makes no round trip for retrieval, on PostgreSQL too.
        from catalog.retrieval import get_index, index_holder, search

        index_holder.reset()
        get_index()  # the process's index, built from this catalog
        with django_assert_num_queries(0):
            found = search("One Piece", limit=1)
        assert _titles(found) == ["One Piece"]
