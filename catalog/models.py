"""The store's catalog: series (products), review summaries and promotions."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Demographic(models.TextChoices):
    SHONEN = "shonen", "Shōnen"
    SEINEN = "seinen", "Seinen"
    SHOJO = "shojo", "Shōjo"
    JOSEI = "josei", "Josei"
    CHILDREN = "children", "Children"
    UNKNOWN = "", "Unknown"


class SeriesStatus(models.TextChoices):
    ONGOING = "ongoing", "Ongoing"
    COMPLETED = "completed", "Completed"
    UNKNOWN = "", "Unknown"


class CatalogSource(models.TextChoices):
    BESTSELLERS = "bestsellers", "Best-selling series (demo catalog)"
    MADB = "madb", "Media Arts Database import"
    MANUAL = "manual", "Added by staff"


class Product(models.Model):
    """A manga series sold by the store, priced per volume."""

    sku = models.CharField(max_length=16, unique=True, help_text="Stable store id (ASIN-like).")
    title_en = models.CharField(max_length=300, blank=True)
    title_ja = models.CharField(max_length=300, blank=True)
    title_kana = models.CharField(max_length=300, blank=True)
    authors = models.JSONField(default=list, blank=True)
    publisher = models.CharField(max_length=200, blank=True)
    demographic = models.CharField(max_length=16, choices=Demographic.choices, blank=True)
    genres = models.JSONField(default=list, blank=True)
    volumes = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=SeriesStatus.choices, blank=True)
    start_year = models.PositiveIntegerField(null=True, blank=True)
    end_year = models.PositiveIntegerField(null=True, blank=True)
    price_yen = models.PositiveIntegerField(help_text="Price of one volume, tax included, in yen.")
    rating = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("1")), MaxValueValidator(Decimal("5"))],
    )
    stock = models.PositiveIntegerField(default=0)
    description = models.TextField(blank=True)
    sales_millions = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    source = models.CharField(max_length=16, choices=CatalogSource.choices, default=CatalogSource.MANUAL)
    madb_id = models.CharField(max_length=32, unique=True, null=True, blank=True)
    # Pre-tokenised search terms for PostgreSQL full-text search (catalog.retrieval); kept by save().
    search_text = models.TextField(blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-sales_millions", "title_en", "title_ja"]
        indexes = [models.Index(fields=["source"]), models.Index(fields=["demographic"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(title_en="") | ~Q(title_ja=""), name="product_has_a_title"
            ),
        ]

    def __str__(self) -> str:
        return self.display_title

    def save(self, *args: object, **kwargs: object) -> None:
        self.search_text = self.build_search_text()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "search_text"}  # type: ignore[misc]
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def build_search_text(self) -> str:
        from .text import search_document

        return search_document(self.title_en, self.title_ja, self.title_kana, " ".join(self.authors or []),
                               " ".join(self.genres or []), self.demographic, self.publisher, self.description)

    @property
    def display_title(self) -> str:
        """English title, or the Japanese one where the series has none."""
        return self.title_en or self.title_ja

    @property
    def in_stock(self) -> bool:
        return self.stock > 0

    def get_absolute_url(self) -> str:
        return reverse("catalog:product", kwargs={"sku": self.sku})


class ReviewSummary(models.Model):
    """What readers say about a series, summarised for the assistant."""

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="review_summary")
    summary = models.TextField()
    average_rating = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("1")), MaxValueValidator(Decimal("5"))],
    )
    review_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "review summaries"

    def __str__(self) -> str:
        return f"Reviews of {self.product}"


class Promotion(models.Model):
    """A discount on some or all of the catalog for a period."""

    code = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    discount_percent = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    demographic = models.CharField(
        max_length=16, choices=Demographic.choices, blank=True, help_text="Empty: any demographic."
    )
    products = models.ManyToManyField(Product, blank=True, related_name="promotions",
                                      help_text="Empty: every product of the demographic.")
    min_volumes = models.PositiveSmallIntegerField(default=1, help_text="Volumes in the cart to qualify.")
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-discount_percent"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="promotion_ends_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.discount_percent}% off)"
