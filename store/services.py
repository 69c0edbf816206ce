"""Writes to the store: carts, demo orders, the FAQ."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.models import Product

from .models import CartItem, FaqEntry, Order, OrderItem, OrderStatus


class StoreError(Exception):
    """A request the store cannot carry out (unknown product, bad quantity)."""


def cart_add(*, session_key: str, sku: str, volume: int = 1, quantity: int = 1) -> CartItem:
    if not 1 <= quantity <= 20:
        raise StoreError("Quantity must be between 1 and 20.")
    product = Product.objects.filter(sku=sku).first()
    if product is None:
        raise StoreError(f"No product {sku}.")
    if volume < 1 or (product.volumes and volume > product.volumes):
        raise StoreError(f"{product.display_title} has no volume {volume}.")
    with transaction.atomic():
        item, created = CartItem.objects.get_or_create(session_key=session_key, product=product, volume=volume,
                                                       defaults={"quantity": quantity})
        if not created:
            item.quantity = min(20, item.quantity + quantity)
            item.save(update_fields=["quantity"])
    return item


def _order_number(seed: str) -> str:
    return "MA-" + str(10000 + int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % 90000)


def demo_orders_ensure(*, session_key: str) -> list[Order]:
    """Two sample orders for a new browser session (one on its way, one delivered). Idempotent."""
    existing = list(Order.objects.filter(session_key=session_key))
    if existing:
        return existing
    now = timezone.now()
    picks = list(Product.objects.filter(source="bestsellers", stock__gt=0).order_by("-sales_millions")[:12])
    if len(picks) < 4:
        return []
    digest = int(hashlib.sha256(session_key.encode()).hexdigest()[:6], 16)
    specs = [
        (OrderStatus.SHIPPED, now - timedelta(days=2), now - timedelta(days=1), None, "Yamato Transport"),
        (OrderStatus.DELIVERED, now - timedelta(days=9), now - timedelta(days=8), now - timedelta(days=6), "Japan Post"),
    ]
    orders = []
    for n, (status, placed, shipped, delivered, carrier) in enumerate(specs):
        product = picks[(digest + 5 * n) % len(picks)]
        for attempt in range(5):
            try:
                with transaction.atomic():
                    order = Order.objects.create(
                        number=_order_number(f"{session_key}:{n}:{attempt}"), session_key=session_key, status=status,
                        carrier=carrier, tracking_number=f"{(digest * 7 + n) % 10000:04d}-{(digest + 31 * n) % 10000:04d}-{n + 1:04d}",
                        placed_at=placed, shipped_at=shipped, delivered_at=delivered,
                        expected_delivery=(shipped + timedelta(days=2)).date())
                    OrderItem.objects.create(order=order, product=product, volume=1 + digest % max(1, (product.volumes or 1)),
                                             quantity=1, unit_price_yen=product.price_yen)
                orders.append(order)
                break
            except IntegrityError:
                continue  # order number taken: try the next one
    return orders


DEMO_FAQ = [
    ("shipping", "How much is shipping?", "Shipping in Japan is ¥350 per order, free from ¥3,000. Okinawa and remote islands add ¥500.",
     "shipping fee cost postage delivery charge 送料 配送料 無料"),
    ("shipping", "How long does delivery take?", "Orders ship within 1 business day. Delivery takes 1-2 days to most of Japan and 2-4 days to Hokkaido, Okinawa and remote islands.",
     "delivery time days how long arrive 何日 届く 北海道 沖縄 到着"),
    ("shipping", "Do you ship abroad?", "We ship to 30 countries by EMS: ¥2,000 per order, 4-10 days. Duties are paid by the recipient.",
     "international abroad overseas worldwide ems 海外 発送"),
    ("returns", "What is the return policy?", "Unread items can be returned within 30 days of delivery. Damaged, misprinted or wrong items are always accepted; we pay the return shipping. Refunds go to the original payment within 5-7 days.",
     "return policy refund time limit days send back 返品 返金 期限 いつまで"),
    ("payment", "Which payment methods do you accept?", "Credit cards (Visa, Mastercard, JCB, Amex), PayPay, convenience-store payment and cash on delivery (¥330 fee). Card payments have no fee.",
     "payment methods credit card paypay cash on delivery konbini fee 支払い方法 クレジットカード 代引き 手数料"),
    ("payment", "Are prices tax included?", "Yes: every price on the store includes 10% consumption tax.", "tax included consumption 税込 消費税"),
    ("account", "I can't log in or forgot my password", "Use 'Forgot password' on the sign-in page; a reset link arrives by email within minutes. You can also order without an account.",
     "login log in sign in password reset account register without ログイン パスワード 会員登録"),
    ("points", "How do points work?", "Members earn 1 point per ¥100. Points are worth ¥1 each at checkout and expire after 12 months without a purchase.",
     "points rewards earn redeem expire ポイント 貯まる 使う"),
    ("gifts", "Do you offer gift wrapping?", "Yes, gift wrapping is ¥220 per order; choose it at checkout. We never put prices in gift parcels.",
     "gift wrap wrapping present ギフト ラッピング プレゼント"),
    ("orders", "Can I cancel or change an order?", "Orders can be changed or cancelled until they ship (usually within a day) from the order page, or by asking here.",
     "cancel change modify order キャンセル 変更"),
    ("orders", "Is there a purchase limit?", "Limited editions are capped at 2 copies per customer; regular volumes have no limit.",
     "limit how many copies per person maximum 上限 何冊"),
    ("stock", "Do you restock out-of-print titles?", "We restock whenever the publisher reprints. Use 'Notify me' on the product page to get an email.",
     "restock out of print sold out reprint 再入荷 絶版 品切れ"),
    ("contact", "How can I contact the store?", "Write to support@example-manga.jp or use this chat; the support team answers within one business day (9:00-18:00 JST).",
     "contact support email phone hours 問い合わせ 連絡 営業時間"),
    ("coupons", "Can I combine coupons?", "One coupon per order; it combines with running promotions. Enter it at checkout in the 'Coupon code' field.",
     "coupon code combine two stack discount code where enter クーポン 割引コード 併用"),
]


def demo_faq_load() -> int:
    """The demo FAQ (idempotent)."""
    for topic, question, answer, keywords in DEMO_FAQ:
        FaqEntry.objects.update_or_create(question=question, defaults={"topic": topic, "answer": answer,
                                                                       "keywords": keywords, "active": True})
    return len(DEMO_FAQ)
