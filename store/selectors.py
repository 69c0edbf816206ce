"""Reads of store data for the chat path, always scoped to the customer's own session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from catalog.text import tokens
from mangaassist.cached_config import cached_config

from .models import CartItem, FaqEntry, Order, OrderStatus


@dataclass(frozen=True)
class OrderFacts:
    number: str
    found: bool
    text: str  # one line the prompt (and the simulated responder) uses


ORDERS_TTL = 60  # the chat's cached copy of a session's orders; an edit through the ORM drops it at once
SESSION_ORDERS_CACHED = 50  # the latest orders a session's cached copy holds


def orders_key(session_key: str) -> str:
    return f"store:orders:{session_key}"


@dataclass(frozen=True)
class OrderRecord:
    """An order as the chat states it: plain values, so that the chat can keep a session's orders in
    its cache and answer the next order question without a query."""

    number: str
    items: str
    status: str
    status_label: str
    carrier: str
    tracking_number: str
    shipped_at: datetime | None
    delivered_at: datetime | None
    expected_delivery: date | None


def _record(order: Order) -> OrderRecord:
    items = ", ".join(f"{i.product.display_title} vol. {i.volume} x{i.quantity}" for i in order.items.all())
    return OrderRecord(order.number, items, order.status, order.get_status_display(), order.carrier,
                       order.tracking_number, order.shipped_at, order.delivered_at, order.expected_delivery)


def _orders(session_key: str) -> QuerySet[Order]:
    return Order.objects.filter(session_key=session_key).prefetch_related("items__product")


def session_orders(*, session_key: str) -> tuple[OrderRecord, ...]:
    """The session's latest orders, newest first (at most SESSION_ORDERS_CACHED)."""
    return tuple(_record(o) for o in _orders(session_key)[:SESSION_ORDERS_CACHED])


def orders_cover(records: tuple[OrderRecord, ...], numbers: list[str]) -> bool:
    """Whether a session's latest orders answer for `numbers`: each is among them, or the session
    has no older orders (a number not found is then not this customer's)."""
    return len(records) < SESSION_ORDERS_CACHED or {*numbers} <= {r.number for r in records}


def order_facts(*, session_key: str, numbers: list[str], with_returns: bool = False,
                records: tuple[OrderRecord, ...] | None = None) -> list[OrderFacts]:
    """The orders named (or, none named, the session's latest), as facts. Other sessions' orders stay unknown.

    `records`: the session's latest orders when the caller has them and they cover `numbers`
    (`orders_cover`); else the database is asked for the named ones."""
    if records is None:
        orders = _orders(session_key)
        records = tuple(map(_record, orders.filter(number__in=numbers) if numbers else orders[:1]))
    found = {r.number: r for r in records if r.number in numbers} if numbers else {}
    out = [OrderFacts(n, False, f"Order {n}: no order with this number for this customer; ask them to check it.")
           for n in numbers if n not in found]
    chosen = list(found.values()) if numbers else list(records[:1])
    for order in chosen:
        text = f"Order {order.number} ({order.items}): {order.status_label.lower()}"
        if order.status == OrderStatus.SHIPPED:
            text += (f", shipped {order.shipped_at:%Y-%m-%d} by {order.carrier}, tracking {order.tracking_number}, "
                     f"expected {order.expected_delivery:%Y-%m-%d}")
        elif order.status == OrderStatus.DELIVERED and order.delivered_at:
            text += f", delivered {order.delivered_at:%Y-%m-%d}"
        elif order.status == OrderStatus.PROCESSING:
            text += ", ships within 1 business day"
        if with_returns:
            text += ". " + _return_eligibility(order)
        out.append(OrderFacts(order.number, True, text + "."))
    return out


def _return_eligibility(order: OrderRecord) -> str:
    window = settings.STORE_RETURN_WINDOW_DAYS
    if order.status == OrderStatus.DELIVERED and order.delivered_at:
        until = order.delivered_at + timedelta(days=window)
        if timezone.now() <= until:
            return f"Returns accepted until {until:%Y-%m-%d} ({window} days); refund in 5-7 days"
        return f"The {window}-day return window ended {until:%Y-%m-%d}; damaged or wrong items are still accepted"
    if order.status in {OrderStatus.SHIPPED, OrderStatus.PROCESSING}:
        return "Not delivered yet: it can be refused or cancelled, or returned within 30 days of delivery"
    return "Cancelled: nothing to return"


def cart_facts(*, session_key: str) -> str:
    items = list(CartItem.objects.filter(session_key=session_key).select_related("product"))
    if not items:
        return "Cart: empty."
    subtotal = sum(i.product.price_yen * i.quantity for i in items)
    lines = ", ".join(f"{i.product.display_title} vol. {i.volume} x{i.quantity} (¥{i.product.price_yen:,})" for i in items)
    return f"Cart: {lines}; subtotal ¥{subtotal:,}."


FAQ_KEY = "store:faq"


@dataclass(frozen=True)
class FaqTerms:
    """An active FAQ entry as the matcher reads it: its search terms computed once, not per message."""

    topic: str
    answer: str
    terms: frozenset[str]


def _faq_load() -> tuple[FaqTerms, ...]:
    return tuple(FaqTerms(e.topic, e.answer, frozenset(tokens(f"{e.question} {e.keywords}")))
                 for e in FaqEntry.objects.filter(active=True))


def faq_entries() -> tuple[FaqTerms, ...]:
    """The active FAQ entries, through the shared cache: an admin edit reaches every process at once
    (store.signals); a bulk change outside the ORM's signals within the hour."""
    return cached_config(FAQ_KEY, _faq_load, tuple, timeout=60 * 60)


def faq_facts(text: str, *, limit: int = 2, entries: tuple[FaqTerms, ...] | None = None) -> list[str]:
    """The policy entries that best match the question (word and character-bigram overlap).

    `entries`: the active entries when the caller has them (the chat path reads them from its
    cache in place); else through the shared cache, or the database."""
    query = set(tokens(text))
    if not query:
        return []
    if entries is None:
        entries = faq_entries()
    scored = [(overlap, entry) for entry in entries if (overlap := len(query & entry.terms))]
    scored.sort(key=lambda pair: -pair[0])
    return [f"Policy ({e.topic}): {e.answer}" for _, e in scored[:limit]]
