"""The store data the assistant answers from: orders, carts and the policy FAQ."""

from __future__ import annotations

from django.db import models

from catalog.models import Product


class OrderStatus(models.TextChoices):
    PROCESSING = "processing", "Processing"
    SHIPPED = "shipped", "Shipped"
    DELIVERED = "delivered", "Delivered"
    CANCELLED = "cancelled", "Cancelled"


class Order(models.Model):
    """An order placed by one browser session (the demo store has no accounts)."""

    number = models.CharField(max_length=16, unique=True, help_text="MA-12345")
    session_key = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.PROCESSING)
    carrier = models.CharField(max_length=40, blank=True)
    tracking_number = models.CharField(max_length=40, blank=True)
    placed_at = models.DateTimeField()
    shipped_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    expected_delivery = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["-placed_at"]

    def __str__(self) -> str:
        return self.number


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    volume = models.PositiveIntegerField(default=1)
    quantity = models.PositiveIntegerField(default=1)
    unit_price_yen = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.product} vol. {self.volume} x{self.quantity}"


class CartItem(models.Model):
    """One line of a browser session's cart."""

    session_key = models.CharField(max_length=64, db_index=True)
    product = models.ForeignKey(Product, on_delete=models.CASCADE)
    volume = models.PositiveIntegerField(default=1)
    quantity = models.PositiveIntegerField(default=1)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session_key", "product", "volume"], name="one_cart_line_per_volume")]


class FaqEntry(models.Model):
    """A store policy answer (shipping, returns, payment, account...)."""

    topic = models.CharField(max_length=40)
    question = models.CharField(max_length=200)
    answer = models.TextField()
    keywords = models.CharField(max_length=300, blank=True, help_text="Extra words customers use (English or Japanese).")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["topic", "question"]
        verbose_name = "FAQ entry"
        verbose_name_plural = "FAQ entries"

    def __str__(self) -> str:
        return self.question
