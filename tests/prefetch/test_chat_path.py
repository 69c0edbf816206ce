"""Through the real socket: an answer queues the prefetch, the follow-up reports the hit.

Runs once chat/assembly.py asks prefetch_lookup and chat/orchestrator.py queues the prefetch
(the integration this app's issue hands to the chat path).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from prometheus_client import REGISTRY

from chat.assembly import AssembledContext, ContextAssembler
from chat.consumers import ChatConsumer
from chat.llm.simulated import SimulatedBackend
from chat.orchestrator import Orchestrator
from prefetch.models import PrefetchOutcome
from prefetch.selectors import prediction_key
from tests.conftest import open_chat

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("prefetch" not in AssembledContext.__dataclass_fields__,
                       reason="chat/assembly.py does not call prefetch_lookup yet"),
]


async def _until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await sync_to_async(check)()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


def _lookups(result: str, transition: str) -> float:
    return REGISTRY.get_sample_value("mangaassist_prefetch_lookups_total",
                                     {"result": result, "transition": transition}) or 0.0


@pytest.mark.usefixtures("transitions")
class ChatPathTests:
    async def test_the_follow_up_about_a_series_just_shown_is_a_prefetch_hit(self, demo_catalog: None) -> None:
        # Deadlines a loaded test machine always meets: this test is about what is ready, not how fast.
        ChatConsumer.orchestrator = Orchestrator(backend=SimulatedBackend(profile="instant", seed=7),
                                                 assembler=ContextAssembler(deadlines={
                                                     name: 5.0 for name in ("memory", "memory_reference", "retrieval",
                                                                            "store", "prefetch")}))
        hits = _lookups("hit", "product_discovery->product_question")
        chat = await open_chat()
        frames = await chat.ask("Show me popular shonen manga", "m1")
        conversation = uuid.UUID(next(f for f in frames if f["type"] == "ack")["conversation"])
        assert frames[-1]["metrics"]["intent"] == "product_discovery" and frames[-1]["metrics"]["prefetch_hit"] is None
        # Queued once the answer is saved; done when the prediction lists what it warmed.
        assert await _until(lambda: (cache.get(prediction_key(conversation)) or {}).get("keys"))

        second = (await chat.ask("Tell me more about the second one", "m2"))[-1]
        assert second["metrics"]["intent"] == "product_question"
        assert second["products"][0]["sku"] == frames[-1]["products"][1]["sku"]
        assert second["metrics"]["prefetch_hit"] is True
        outcome = await _until(lambda: PrefetchOutcome.objects.filter(conversation_id=conversation).first())
        await chat.ws.disconnect()
        assert (outcome.from_intent, outcome.to_intent, outcome.predicted, outcome.hit) == (
            "product_discovery", "product_question", True, True)
        assert _lookups("hit", "product_discovery->product_question") == hits + 1


@pytest.mark.usefixtures("transitions")
class NeverInTheWayTests:
    """Speculation runs after the answer, beside the customer's wait, never inside it."""

    async def test_a_prefetch_and_a_speculation_still_running_do_not_hold_back_completed(
            self, demo_catalog: None, monkeypatch: pytest.MonkeyPatch) -> None:
        import threading

        from prefetch import services, speculation

        release, started = threading.Event(), threading.Event()

        def blocked(**_: Any) -> Any:
            started.set()
            release.wait(10)  # a worker that takes its time (or a backlog)
            return "stale"

        monkeypatch.setattr(services, "prefetch_for_turn", blocked)
        monkeypatch.setattr(speculation, "speculation_prepare", blocked)
        try:
            chat = await open_chat()
            first = await chat.ask("Recommend a shonen manga like Dragon Ball", "m1")
            assert first[-1]["type"] == "completed"
            assert await _until(started.is_set)  # the prefetch (or the speculation) is running now ...
            second = await chat.ask("Tell me more about the first one", "m2")
            await chat.ws.disconnect()
            # ... and the next answer completed while both were still blocked.
            assert second[-1]["type"] == "completed" and not release.is_set()
            assert second[-1]["metrics"].get("speculative") is not True
        finally:
            release.set()

    async def test_with_the_broker_down_the_chat_answers_and_the_tasks_are_counted_as_skipped(
            self, demo_catalog: None, broker: Any) -> None:
        from tests.prefetch.conftest import CLOSED_BROKER

        def skipped(task: str) -> float:
            return REGISTRY.get_sample_value("mangaassist_tasks_queued_total",
                                             {"task": task, "result": "skipped"}) or 0.0

        broker(CLOSED_BROKER)
        before = {task: skipped(task) for task in ("prefetch.prefetch_for_turn", "prefetch.speculate")}
        chat = await open_chat()
        first = await chat.ask("Recommend a shonen manga like Dragon Ball", "m1")
        second = await chat.ask("Tell me more about the first one", "m2")
        await chat.ws.disconnect()
        assert first[-1]["type"] == "completed" and second[-1]["type"] == "completed"
        assert second[-1]["products"][0]["sku"] == first[-1]["products"][0]["sku"]
        assert await _until(lambda: all(skipped(task) > before[task] for task in before))
