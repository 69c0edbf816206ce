"""Checks on the full answer before `completed`: which catalog products it presents."""

from __future__ import annotations

from catalog.selectors import ProductFacts
from catalog.text import compact


def products_presented(text: str, candidates: list[ProductFacts]) -> list[ProductFacts]:
    """The candidates the answer names, in the order it names them."""
    folded = compact(text)
    positions: list[tuple[int, ProductFacts]] = []
    for product in candidates:
        spots = [folded.find(compact(t)) for t in (product.title_en, product.title_ja) if t and compact(t)]
        spots = [s for s in spots if s >= 0]
        if spots and product not in [p for _, p in positions]:
            positions.append((min(spots), product))
    positions.sort(key=lambda pair: pair[0])
    return [product for _, product in positions]
