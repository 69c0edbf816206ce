"""The one model-call policy, through the real socket: retries, fallback, partial answers, stalls."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import sync_to_async

from chat.consumers import ChatConsumer
from chat.llm.simulated import Fault, SimulatedBackend
from chat.models import Role, Turn, TurnStatus
from chat.orchestrator import Orchestrator
from tests.conftest import open_chat, saved_turns

pytestmark = pytest.mark.django_db(transaction=True)


def _use(backend: SimulatedBackend) -> SimulatedBackend:
    ChatConsumer.orchestrator = Orchestrator(backend=backend)
    return backend


async def _answer(message_id: str) -> Turn:
    await saved_turns(2)
    return await sync_to_async(Turn.objects.get)(role=Role.ASSISTANT, client_message_id=message_id)


class ModelCallPolicyTests:
    async def test_throttled_before_first_token_is_retried_and_answered(self, demo_catalog: None) -> None:
        backend = _use(SimulatedBackend(profile="instant"))
        backend.inject(Fault("throttle"))
        chat = await open_chat()
        frames = await chat.ask("Recommend a seinen manga", "r1")
        await chat.ws.disconnect()
        assert frames[-1]["type"] == "completed" and frames[-1]["metrics"]["retries"] == 1
        assert not [f for f in frames if f["type"] == "error"]

    async def test_throttled_every_time_falls_back_to_the_secondary_route(self, demo_catalog: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.LLM_FALLBACK_MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
        settings.LLM_MAX_RETRIES = 1
        backend = _use(SimulatedBackend(profile="instant"))
        backend.inject(Fault("throttle"))
        backend.inject(Fault("throttle"))
        chat = await open_chat()
        frames = await chat.ask("Recommend a seinen manga", "r1")
        await chat.ws.disconnect()
        assert frames[-1]["type"] == "completed"
        assert frames[-1]["metrics"]["route"] == "secondary" and frames[-1]["metrics"]["retries"] == 2

    async def test_throttled_past_every_retry_is_an_error_and_a_failed_turn(self, demo_catalog: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.LLM_MAX_RETRIES = 2
        backend = _use(SimulatedBackend(profile="instant"))
        for _ in range(3):
            backend.inject(Fault("throttle"))
        chat = await open_chat()
        frames = await chat.ask("Recommend a seinen manga", "r1")
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == "upstream_unavailable"
        assert (await chat.ask("Hello", "r2"))[-1]["type"] == "completed"  # the socket goes on
        await chat.ws.disconnect()
        answer = await sync_to_async(Turn.objects.get)(role=Role.ASSISTANT, client_message_id="r1")
        assert answer.status == TurnStatus.FAILED and answer.text == "" and answer.failure_reason

    async def test_error_mid_stream_is_not_retried_and_the_partial_answer_is_saved(self, demo_catalog: None) -> None:
        backend = _use(SimulatedBackend(profile="instant"))
        backend.inject(Fault("stream_error", after_tokens=5))
        chat = await open_chat()
        frames = await chat.ask("Recommend a shonen manga like Dragon Ball", "p1")
        await chat.ws.disconnect()
        deltas = [f for f in frames if f["type"] == "delta"]
        assert len(deltas) == 5 and frames[-1]["type"] == "error"
        assert not [f for f in frames if f["type"] == "completed"]
        answer = await _answer("p1")
        assert answer.status == TurnStatus.PARTIAL and answer.text == "".join(d["text"] for d in deltas)
        assert "error" in answer.failure_reason

    async def test_stall_after_the_first_token_is_a_failure(self, demo_catalog: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.LLM_STALL_SECONDS = 0.2
        backend = _use(SimulatedBackend(profile="instant"))
        backend.inject(Fault("stall", after_tokens=3))
        chat = await open_chat()
        frames = await chat.ask("Recommend a shonen manga", "st1")
        await chat.ws.disconnect()
        assert frames[-1]["type"] == "error" and len([f for f in frames if f["type"] == "delta"]) == 3
        answer = await _answer("st1")
        assert answer.status == TurnStatus.PARTIAL and "stalled" in answer.failure_reason

    async def test_keepalive_is_sent_while_the_first_token_is_slow(self, demo_catalog: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.CHAT_KEEPALIVE_SECONDS = 0.05
        settings.LLM_SIM_PREFILL_BASE_MS = 300
        _use(SimulatedBackend(profile="bedrock"))
        chat = await open_chat()
        frames = await chat.ask("Hello", "k1")
        await chat.ws.disconnect()
        types = [f["type"] for f in frames]
        assert "keepalive" in types and types.index("keepalive") < types.index("delta")


class ListSink:
    """A TurnSink that keeps what the orchestrator sent."""

    def __init__(self) -> None:
        self.deltas: list[tuple[int, str]] = []
        self.done: dict | None = None

    async def delta(self, index: int, text: str) -> None:
        self.deltas.append((index, text))

    async def completed(self, text: str, products: list[dict], metrics: dict) -> None:
        self.done = {"text": text, "products": products, "metrics": metrics}

    async def failed(self, code: str, message: str, retry_after: float | None = None) -> None:
        self.done = {"error": code}


class ContinuationTests:
    """`resume` after a cut answer: the model continues from the partial text (an assistant prefill)."""

    async def test_a_cut_answer_continues_from_its_partial_text_without_repeating_it(self, demo_catalog: None) -> None:
        from chat.assembly import TurnInput

        question = "Recommend a shonen manga like Dragon Ball"
        reference = await open_chat()
        reference_done = (await reference.ask(question, "whole"))[-1]
        whole = reference_done["text"]
        await reference.ws.disconnect()

        backend = _use(SimulatedBackend(profile="instant"))
        chat = await open_chat()
        await chat.ask("Hello", "h1")
        backend.inject(Fault("stream_error", after_tokens=7))
        frames = await chat.ask(question, "cut")
        await chat.ws.disconnect()
        partial = await _answer_when("cut", TurnStatus.PARTIAL)
        sent = [f for f in frames if f["type"] == "delta"]
        assert len(sent) == 7 and partial.text == "".join(f["text"] for f in sent)

        sink = ListSink()
        turn = TurnInput(partial.conversation_id, "cut", question, {})
        await ChatConsumer.orchestrator.answer(turn, sink, prefill=partial.text, first_index=len(sent))
        assert [index for index, _ in sink.deltas] == list(range(7, 7 + len(sink.deltas)))
        assert sink.done is not None and sink.done["text"] == whole
        assert partial.text + "".join(text for _, text in sink.deltas) == whole
        saved = await _answer_when("cut", TurnStatus.COMPLETE)
        assert saved.text == whole
        from chat.models import TurnRecord

        records = await sync_to_async(lambda: list(TurnRecord.objects.filter(client_message_id="cut")
                                                   .values_list("status", flat=True)))()
        assert records == [TurnStatus.COMPLETE]  # the record says how the answer ended, once
        assert [p["sku"] for p in sink.done["products"]] == [p["sku"] for p in reference_done["products"]]


async def _answer_when(message_id: str, status: TurnStatus, timeout: float = 3.0) -> Turn:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        turn = await sync_to_async(Turn.objects.filter(role=Role.ASSISTANT, client_message_id=message_id).first)()
        if (turn is not None and turn.status == status) or time.monotonic() > deadline:
            assert turn is not None and turn.status == status
            return turn
        await asyncio.sleep(0.02)


class NaivePipelineTests:
    """The benchmark's baseline (CHAT_PIPELINE=naive) answers the same, with everything switched off."""

    async def test_same_products_uncompressed_prompt_sources_one_by_one_and_no_prefetch(
            self, demo_catalog: None, monkeypatch: pytest.MonkeyPatch) -> None:
        import asyncio

        from django.core.cache import cache

        from chat import assembly
        from chat.assembly import ContextAssembler
        from prefetch.selectors import prediction_key

        optimized = await open_chat()
        reference = [(await optimized.ask(text, f"o{n}"))[-1] for n, text in enumerate(
            ["Recommend a shonen manga like Dragon Ball", "Tell me more about the second one"])]
        await optimized.ws.disconnect()

        running, most = 0, 0
        lock = threading.Lock()
        timed = assembly._timed

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                time.sleep(0.005)  # a source that takes a moment: concurrent ones would overlap
                return timed(*args, **kwargs)
            finally:
                with lock:
                    running -= 1

        monkeypatch.setattr(assembly, "_timed", counted)
        ChatConsumer.orchestrator = Orchestrator(backend=SimulatedBackend(profile="instant", seed=7),
                                                 assembler=ContextAssembler(naive=True))
        naive = await open_chat()
        answers = [(await naive.ask(text, f"n{n}"))[-1] for n, text in enumerate(
            ["Recommend a shonen manga like Dragon Ball", "Tell me more about the second one"])]
        conversation = (await _answer_when("n1", TurnStatus.COMPLETE)).conversation_id
        await naive.ws.disconnect()
        assert [[p["sku"] for p in a["products"]] for a in answers] == [
            [p["sku"] for p in a["products"]] for a in reference]
        assert most == 1  # one source at a time
        for answer, baseline in zip(answers, reference):
            assert answer["metrics"]["compression_ratio"] == 1.0
            assert answer["metrics"]["prompt_tokens"] > baseline["metrics"]["prompt_tokens"]
        assert cache.get(prediction_key(conversation)) is None  # nothing prefetched or speculated
