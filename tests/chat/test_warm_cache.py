"""What a web process and a chat socket put in the cache before the first question: the first turns
then read the store's data in place instead of on the ORM pool while the customer waits."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.cached_db import SessionStore
from django.core.cache import cache

from catalog.models import Product
from chat import assembly
from prefetch.selectors import cart_key
from store import selectors as store_selectors
from store.services import cart_add, demo_orders_ensure
from tests.conftest import ORIGIN, open_chat

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_starting_process_caches_the_best_rated_products_promotions_and_faq(demo_catalog: None) -> None:
    cache.clear()
    assert assembly.store_cache_warm(products=5) == 5

    ranked = list(Product.objects.order_by("-rating", "id").values_list("id", flat=True))
    facts, hits = assembly.load_product_facts(ranked[:5], cache_only=True)
    assert [f.id for f in facts] == ranked[:5] and hits == 5
    assert assembly.load_reviews(ranked[:5], cache_only=True) is not assembly._MISS
    assert assembly.load_product_facts(ranked[5:6], cache_only=True) is assembly._MISS  # only as many as asked
    assert assembly._cached(assembly.PROMOTIONS_KEY) is not assembly._MISS
    assert assembly._cached(store_selectors.FAQ_KEY, tuple)  # the FAQ's entries


async def _cached_soon(key: str, timeout: float = 5.0) -> object:
    deadline = time.monotonic() + timeout
    while (found := cache.get(key)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return found


async def test_a_socket_of_a_known_session_caches_its_orders_and_cart(demo_catalog: None) -> None:
    session = SessionStore()
    await sync_to_async(session.save)()
    key = session.session_key
    orders = await sync_to_async(demo_orders_ensure)(session_key=key)
    product = await sync_to_async(Product.objects.order_by("id").first)()
    await sync_to_async(cart_add)(session_key=key, sku=product.sku, quantity=2)
    cache.delete_many([store_selectors.orders_key(key), cart_key(key)])

    chat = await open_chat(headers=[ORIGIN, (b"cookie", f"sessionid={key}".encode())])
    cached_orders = await _cached_soon(store_selectors.orders_key(key))
    cart = await _cached_soon(cart_key(key))
    await chat.ws.disconnect()
    assert cached_orders is not None and {o.number for o in cached_orders} == {o.number for o in orders}
    assert cart is not None and product.display_title in cart

    # The first order question reads them in place.
    chat = await open_chat(headers=[ORIGIN, (b"cookie", f"sessionid={key}".encode())])
    completed = (await chat.ask("Where is my order?", "o1"))[-1]
    await chat.ws.disconnect()
    assert completed["metrics"]["intent"] == "order_tracking"
    assert orders[0].number in completed["text"] or orders[1].number in completed["text"]


async def test_a_socket_without_a_session_reads_nothing(demo_catalog: None) -> None:
    before = set(cache._cache)  # type: ignore[attr-defined] - local memory in tests
    chat = await open_chat(headers=[ORIGIN])
    await asyncio.sleep(0.5)
    await chat.ws.disconnect()
    added = {k for k in set(cache._cache) - before if "store:orders" in k or "cart" in k}  # type: ignore[attr-defined]
    assert not added
