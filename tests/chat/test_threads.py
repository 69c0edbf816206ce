"""The customer's path first: background jobs wait while a turn is prepared, within a bound."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chat.threads import ForegroundGate, gate, run_background


def test_a_background_job_starts_once_no_turn_is_being_prepared() -> None:
    local = ForegroundGate()
    started = threading.Event()

    def job() -> None:
        local.wait_quiet(5.0)
        started.set()

    with local.foreground():
        with local.foreground():  # two turns at once: the job waits for both
            thread = threading.Thread(target=job)
            thread.start()
            assert not started.wait(0.05)
        assert not started.wait(0.05) and local.busy == 1
    assert started.wait(1.0)
    thread.join()
    assert local.busy == 0


def test_a_busy_process_still_runs_its_background_jobs_after_the_bound() -> None:
    local = ForegroundGate()
    with local.foreground():
        began = time.monotonic()
        local.wait_quiet(0.05)
        waited = time.monotonic() - began
    assert 0.04 <= waited < 1.0


def test_the_gate_is_released_when_the_turn_fails() -> None:
    local = ForegroundGate()
    with pytest.raises(RuntimeError):
        with local.foreground():
            raise RuntimeError("assembly failed")
    assert local.busy == 0
    local.wait_quiet(5.0)  # returns at once


@pytest.mark.django_db
def test_run_background_waits_for_the_turn_being_prepared(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CHAT_BACKGROUND_MAX_DEFER_MS = 5000
    ran_at: list[float] = []

    async def scenario() -> float:
        with gate.foreground():
            job = asyncio.create_task(run_background(lambda: ran_at.append(time.monotonic())))
            await asyncio.sleep(0.1)
            assert not ran_at  # deferred while the turn is prepared
            released = time.monotonic()
        await job
        return released

    released = asyncio.run(scenario())
    assert ran_at and ran_at[0] >= released


@pytest.mark.django_db
def test_a_customer_message_is_written_before_the_writes_that_follow_answers() -> None:
    from django.db import connection

    from chat.threads import WriteQueue

    if connection.vendor != "sqlite":
        pytest.skip("the queue only orders SQLite's writers")
    queue = WriteQueue()
    order: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with queue.turn():
            with queue.turn():  # the same thread again: no deadlock
                release.wait(5)
            order.append("first")

    def writer(name: str, urgent: bool) -> None:
        with queue.turn(urgent=urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    time.sleep(0.05)
    background = threading.Thread(target=writer, args=("answer", False))
    background.start()
    time.sleep(0.05)
    message = threading.Thread(target=writer, args=("message", True))
    message.start()
    time.sleep(0.05)
    assert order == []  # both wait for the writer before them
    release.set()
    for thread in (first, background, message):
        thread.join(5)
    assert order == ["first", "message", "answer"]


@pytest.mark.django_db
def test_a_pool_call_is_awaited_on_the_loop_within_its_deadline_and_the_loop_stays_free(caplog) -> None:  # type: ignore[no-untyped-def]
    from chat.threads import pool_call_ended, submit_db

    async def scenario() -> tuple[bool, bool, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        slow = submit_db(time.sleep, 0.3)
        late = await pool_call_ended(slow, 0.05)
        fast = await pool_call_ended(submit_db(lambda: 42), 1.0)
        ticker.cancel()
        return late, fast, ticks

    late, fast, ticks = asyncio.run(scenario())
    assert (late, fast) == (False, True)
    assert ticks >= 5  # the loop ran other work while it waited
    time.sleep(0.4)  # the slow call ends after its loop closed: nothing to wake, nothing logged
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.django_db(transaction=True)
def test_embedded_assembly_runs_on_the_event_loop_and_scaled_on_a_thread(demo_catalog: None,
                                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import uuid

    import chat.assembly as assembly
    from chat.assembly import ContextAssembler, TurnInput

    where: list[str] = []
    search = assembly._search

    def recorded(*args: object) -> object:
        where.append(threading.current_thread().name)
        return search(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(assembly, "_search", recorded)
    turn = TurnInput(uuid.uuid4(), "m1", "Recommend a shonen manga like Dragon Ball", {}, new_conversation=True)

    async def assemble(assembler: ContextAssembler) -> str:
        context = await assembler.assemble(turn)
        assert len(context.products) == 3 and not context.degraded
        return threading.current_thread().name

    loop_thread = asyncio.run(assemble(ContextAssembler(naive=False)))
    assert where == [loop_thread]  # in place on the loop: no hop, no GIL shared with it
    monkeypatch.setattr(assembly, "cache_is_local", lambda: False)  # a cache across the network (Redis)
    asyncio.run(assemble(ContextAssembler(naive=False)))
    assert where[1].startswith("mangaassist-")  # the fan-out waits on a thread


@pytest.mark.django_db(transaction=True)
def test_policies_cart_and_orders_are_read_in_place_once_cached(demo_catalog: None,
                                                                monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import uuid

    from django.core.cache import cache

    import store.selectors as store_selectors
    from chat.assembly import ContextAssembler, TurnInput

    where: list[str] = []
    for name in ("faq_facts", "order_facts", "cart_facts"):
        original = getattr(store_selectors, name)

        def recorded(*args: object, _original=original, _name=name, **kwargs: object) -> object:  # type: ignore[no-untyped-def]
            where.append(f"{_name}@{threading.current_thread().name}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(store_selectors, name, recorded)
    cache.delete(store_selectors.FAQ_KEY)

    async def ask(text: str) -> tuple[str, dict]:
        context = await ContextAssembler(naive=False).assemble(
            TurnInput(uuid.uuid4(), "m", text, {}, session_key="s-in-place", new_conversation=True))
        return threading.current_thread().name, context.store

    loop_thread, store = asyncio.run(ask("How much is shipping?"))
    assert len(where) == 1 and where[0].startswith("faq_facts@mangaassist-")  # not cached yet: the pool loads them
    assert any("¥" in fact for fact in store.values())
    where.clear()
    assert asyncio.run(ask("How much is shipping?"))[1] == store
    assert where == [f"faq_facts@{loop_thread}"]  # the policies from the cache, on the loop
    where.clear()
    asyncio.run(ask("I need help with checkout, how do I pay?"))
    asyncio.run(ask("I need help with checkout, how do I pay?"))
    assert [w.split("@")[0] for w in where] == ["cart_facts", "faq_facts", "faq_facts"]  # the cart read once
    assert where[-1].endswith(loop_thread)
    where.clear()
    first = asyncio.run(ask("Where is my order MA-10001?"))[1]
    assert len(where) == 1 and where[0].startswith("order_facts@mangaassist-")  # the first order question: the database
    assert asyncio.run(ask("Where is my order MA-10001?"))[1] == first
    assert where[1] == f"order_facts@{loop_thread}"  # the session's orders kept for the next one


@pytest.mark.django_db(transaction=True)
def test_a_changed_order_is_never_answered_from_the_kept_copy(demo_catalog: None) -> None:
    import uuid

    from django.core.cache import cache

    from chat.assembly import ContextAssembler, TurnInput
    from store.models import Order, OrderStatus
    from store.selectors import orders_key
    from store.services import demo_orders_ensure

    demo_orders_ensure(session_key="s-orders")
    order = Order.objects.filter(session_key="s-orders").first()
    assert order is not None

    async def ask() -> str:
        context = await ContextAssembler(naive=False).assemble(
            TurnInput(uuid.uuid4(), "m", f"Where is my order {order.number}?", {}, session_key="s-orders",
                      new_conversation=True))
        return context.store["order0"]

    asyncio.run(ask())  # read, and kept
    for status in (OrderStatus.CANCELLED, OrderStatus.PROCESSING):
        assert order.number in [r.number for r in cache.get(orders_key("s-orders"))]  # the kept copy
        order.status = status
        order.save()
        assert status.label.lower() in asyncio.run(ask())
    assert "no order with this number" in asyncio.run(ContextAssembler(naive=False).assemble(
        TurnInput(uuid.uuid4(), "m", f"Where is my order {order.number}?", {}, session_key="another-session",
                  new_conversation=True))).store["order0"]


@pytest.mark.django_db(transaction=True)
def test_a_networked_cache_serves_the_kept_orders_too(demo_catalog: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Scaled mode reads nothing in place: the pool's call itself takes the session's orders from the
    cache (Redis there), so the next order question, or the first after the socket's warm-up, skips
    the database like embedded mode does."""
    import uuid

    import chat.assembly as assembly
    import store.selectors as store_selectors
    from chat.assembly import ContextAssembler, TurnInput
    from store.services import demo_orders_ensure

    number = demo_orders_ensure(session_key="s-scaled")[0].number
    reads: list[str] = []
    original = store_selectors.session_orders

    def recorded(**kwargs: object) -> object:
        reads.append(threading.current_thread().name)
        return original(**kwargs)

    monkeypatch.setattr(store_selectors, "session_orders", recorded)
    monkeypatch.setattr(assembly, "cache_is_local", lambda: False)  # a cache across the network (Redis)

    async def ask() -> str:
        context = await ContextAssembler(naive=False).assemble(
            TurnInput(uuid.uuid4(), "m", f"Where is my order {number}?", {}, session_key="s-scaled",
                      new_conversation=True))
        return context.store["order0"]

    first = asyncio.run(ask())
    assert number in first and len(reads) == 1  # read once, on the pool
    assert asyncio.run(ask()) == first and len(reads) == 1  # then from the cache
