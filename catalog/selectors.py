"""Reads from the catalog, shaped for the chat path (plain, cacheable dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from django.db.models import F, Q
from django.utils import timezone

from .models import Product, Promotion, ReviewSummary


@dataclass(frozen=True)
class ProductFacts:
    """Everything the assistant may say about a product, and its card in `completed`."""

    id: int
    sku: str
    title: str
    title_en: str
    title_ja: str
    authors: list[str]
    publisher: str
    demographic: str
    genres: list[str]
    volumes: int | None
    status: str
    start_year: int | None
    end_year: int | None
    price_yen: int
    rating: float | None
    stock: int
    description: str
    url: str

    @property
    def in_stock(self) -> bool:
        return self.stock > 0

    def card(self) -> dict:
        """The product as DESIGN.md §4 puts it in `completed.products`."""
        return {
            "sku": self.sku,
            "title": self.title,
            "title_ja": self.title_ja,
            "authors": list(self.authors),
            "price": self.price_yen,
            "currency": "JPY",
            "in_stock": self.in_stock,
            "url": self.url,
        }

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReviewFacts:
    product_id: int
    summary: str
    average_rating: float
    review_count: int


@dataclass(frozen=True)
class PromotionFacts:
    code: str
    title: str
    description: str
    discount_percent: int
    demographic: str
    min_volumes: int
    product_ids: list[int] = field(default_factory=list)

    def applies_to(self, product: ProductFacts) -> bool:
        if self.product_ids:
            return product.id in self.product_ids
        return not self.demographic or self.demographic == product.demographic


def _facts(product: Product) -> ProductFacts:
    return ProductFacts(
        id=product.id, sku=product.sku, title=product.display_title, title_en=product.title_en,
        title_ja=product.title_ja, authors=list(product.authors or []), publisher=product.publisher,
        demographic=product.demographic, genres=list(product.genres or []), volumes=product.volumes,
        status=product.status, start_year=product.start_year, end_year=product.end_year,
        price_yen=product.price_yen, rating=float(product.rating) if product.rating is not None else None,
        stock=product.stock, description=product.description, url=product.get_absolute_url(),
    )


def product_facts(product_ids: list[int]) -> list[ProductFacts]:
    """Facts for `product_ids`, in that order (unknown ids are left out)."""
    if not product_ids:
        return []
    found = {p.id: _facts(p) for p in Product.objects.filter(id__in=product_ids)}
    return [found[pid] for pid in product_ids if pid in found]


def product_ids_best_rated(*, limit: int) -> list[int]:
    """The ids of the `limit` best-rated products: what a warm-up caches first."""
    return list(Product.objects.order_by(F("rating").desc(nulls_last=True), "id").values_list("id", flat=True)[:limit])


def product_facts_by_sku(skus: list[str]) -> list[ProductFacts]:
    if not skus:
        return []
    found = {p.sku: _facts(p) for p in Product.objects.filter(sku__in=skus)}
    return [found[sku] for sku in skus if sku in found]


def review_facts(product_ids: list[int]) -> list[ReviewFacts]:
    rows = ReviewSummary.objects.filter(product_id__in=product_ids)
    found = {r.product_id: ReviewFacts(r.product_id, r.summary, float(r.average_rating), r.review_count) for r in rows}
    return [found[pid] for pid in product_ids if pid in found]


def promotions_active() -> list[PromotionFacts]:
    now = timezone.now()
    rows = (Promotion.objects.filter(active=True, starts_at__lte=now, ends_at__gt=now)
            .prefetch_related("products").order_by("-discount_percent"))
    return [
        PromotionFacts(p.code, p.title, p.description, p.discount_percent, p.demographic,
                       p.min_volumes, [prod.id for prod in p.products.all()])
        for p in rows
    ]


def products_browse(*, section: str = "", query: str = "", limit: int = 48) -> list[Product]:
    """Products for the store's listing pages."""
    qs = Product.objects.all()
    if section:
        qs = qs.filter(demographic=section)
    if query:
        qs = qs.filter(Q(title_en__icontains=query) | Q(title_ja__icontains=query))
    return list(qs[:limit])
