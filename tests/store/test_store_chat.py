"""Orders, returns, cart and policies answered from the customer's own store data."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.cached_db import SessionStore

from store.models import Order
from store.services import cart_add, demo_orders_ensure
from tests.conftest import ORIGIN, ChatClient, open_chat

pytestmark = pytest.mark.django_db(transaction=True)


async def _customer_with_orders() -> tuple[ChatClient, list[Order]]:
    session = SessionStore()
    await sync_to_async(session.save)()
    orders = await sync_to_async(demo_orders_ensure)(session_key=session.session_key)
    chat = await open_chat(headers=[ORIGIN, (b"cookie", f"sessionid={session.session_key}".encode())])
    chat.session_key = session.session_key  # type: ignore[attr-defined]
    return chat, orders


class DemoOrdersTests:
    def test_each_session_gets_two_orders_once(self, demo_catalog: None) -> None:
        first = demo_orders_ensure(session_key="s1")
        assert len(first) == 2 and {o.status for o in first} == {"shipped", "delivered"}
        assert {o.id for o in demo_orders_ensure(session_key="s1")} == {o.id for o in first}
        assert Order.objects.filter(session_key="s1").count() == 2


class OrderChatTests:
    async def test_order_status_comes_from_the_customers_order(self, demo_catalog: None) -> None:
        chat, orders = await _customer_with_orders()
        shipped = next(o for o in orders if o.status == "shipped")
        completed = (await chat.ask(f"Where is my order {shipped.number.lower().replace('-', ' ')}?", "o1"))[-1]
        await chat.ws.disconnect()
        assert completed["metrics"]["intent"] == "order_tracking"
        assert shipped.number in completed["text"] and shipped.tracking_number in completed["text"]

    async def test_follow_up_without_a_number_uses_the_order_discussed(self, demo_catalog: None) -> None:
        chat, orders = await _customer_with_orders()
        shipped = next(o for o in orders if o.status == "shipped")
        await chat.ask(f"Where is my order {shipped.number}?", "o1")
        completed = (await chat.ask("Has it shipped yet? When will it arrive?", "o2"))[-1]
        await chat.ws.disconnect()
        assert shipped.number in completed["text"] and "shipped" in completed["text"]

    async def test_another_customers_order_is_never_shown(self, demo_catalog: None) -> None:
        other = await sync_to_async(demo_orders_ensure)(session_key="someone-else")
        chat, _ = await _customer_with_orders()
        completed = (await chat.ask(f"Where is my order {other[0].number}?", "o1"))[-1]
        await chat.ws.disconnect()
        assert "no order with this number" in completed["text"]
        assert other[0].tracking_number not in completed["text"]

    async def test_return_eligibility_for_a_delivered_order(self, demo_catalog: None) -> None:
        chat, orders = await _customer_with_orders()
        delivered = next(o for o in orders if o.status == "delivered")
        completed = (await chat.ask(f"I want to return order {delivered.number}, the cover is torn", "r1"))[-1]
        await chat.ws.disconnect()
        assert completed["metrics"]["intent"] == "return_request"
        assert "Returns accepted until" in completed["text"]

    async def test_cart_questions_see_the_cart(self, demo_catalog: None) -> None:
        chat, _ = await _customer_with_orders()
        from catalog.models import Product

        naruto = await sync_to_async(Product.objects.get)(title_en="Naruto")
        await sync_to_async(cart_add)(session_key=chat.session_key, sku=naruto.sku, volume=3, quantity=2)  # type: ignore[attr-defined]
        completed = (await chat.ask("What's in my cart? How do I check out?", "c1"))[-1]
        await chat.ws.disconnect()
        assert completed["metrics"]["intent"] == "checkout_help"
        assert "Naruto vol. 3 x2" in completed["text"] and f"¥{2 * naruto.price_yen:,}" in completed["text"]

    async def test_policy_questions_are_answered_from_the_faq(self, chat: ChatClient) -> None:
        completed = (await chat.ask("How much is shipping?", "f1"))[-1]
        assert completed["metrics"]["intent"] == "faq" and "¥350" in completed["text"]
        completed = (await chat.ask("返品はいつまでできますか？", "f2"))[-1]
        assert "30 days" in completed["text"]

    async def test_an_faq_edit_in_the_admin_reaches_the_next_answer(self, chat: ChatClient) -> None:
        from store.models import FaqEntry

        assert "¥350" in (await chat.ask("How much is shipping?", "e1"))[-1]["text"]  # the entries are cached now
        entry = await sync_to_async(FaqEntry.objects.filter(answer__contains="¥350").first)()
        entry.answer = entry.answer.replace("¥350", "¥400")
        await sync_to_async(entry.save)()
        assert "¥400" in (await chat.ask("How much is shipping?", "e2"))[-1]["text"]
        entry.active = False
        await sync_to_async(entry.save)()
        assert "¥400" not in (await chat.ask("How much is shipping?", "e3"))[-1]["text"]


class DegradedSourcesTests:
    async def test_slow_and_failing_sources_degrade_the_answer_but_never_stop_it(self, demo_catalog: None, monkeypatch,
                                                                                 settings) -> None:  # type: ignore[no-untyped-def]
        import time

        import chat.assembly as assembly

        settings.ASSEMBLY_DEADLINES = {**settings.ASSEMBLY_DEADLINES, "store": 0.05}

        def slow_promotions() -> list:
            time.sleep(0.5)  # a downstream far past its deadline
            return []

        def broken_store(*args: object) -> dict:
            raise ConnectionError("order service down")

        monkeypatch.setattr(assembly, "load_promotions", slow_promotions)
        monkeypatch.setattr(assembly, "store_facts", broken_store)
        from chat.consumers import ChatConsumer
        from chat.orchestrator import Orchestrator
        from chat.llm.simulated import SimulatedBackend

        ChatConsumer.orchestrator = Orchestrator(backend=SimulatedBackend(profile="instant"))
        chat = await open_chat()
        started = time.perf_counter()
        frames = await chat.ask("Recommend a shonen manga like Dragon Ball", "d1")
        elapsed = time.perf_counter() - started
        completed = frames[-1]
        assert completed["type"] == "completed" and len(completed["products"]) == 3
        # A recommendation reads no orders, cart or policy: the store being down does not touch it.
        assert completed["metrics"]["degraded"] == {"promotions": "timeout"}
        assert elapsed < 0.45  # the answer did not wait for the slow source
        completed = (await chat.ask("Where is my order MA-10001?", "d2"))[-1]
        await chat.ws.disconnect()
        assert completed["type"] == "completed" and completed["metrics"]["intent"] == "order_tracking"
        assert completed["metrics"]["degraded"] == {"promotions": "timeout", "orders": "error"}
