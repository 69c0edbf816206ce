"""Relaying a paced model: the first delta at once, the rest coalesced into fewer frames (chat/pacing.py)."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from chat.llm.base import TextDelta
from chat.llm.simulated import SimulatedBackend
from chat.pacing import FramePacer
from tests.conftest import ChatClient

QUESTION = "Recommend a shonen manga like Dragon Ball"
GENEROUS = {"memory": 3.0, "memory_reference": 3.0, "retrieval": 3.0, "store": 3.0, "prefetch": 3.0, "essential": 3.0}


class CountingBackend(SimulatedBackend):
    """The simulated model at a steady pace, remembering every delta it sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[str] = []

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        async for event in super().stream(request):
            if isinstance(event, TextDelta):
                self.sent.append(event.text)
            yield event


@pytest.fixture
def paced(settings: Any) -> CountingBackend:
    from chat.assembly import ContextAssembler
    from chat.consumers import ChatConsumer
    from chat.orchestrator import Orchestrator

    settings.LLM_SIM_PREFILL_BASE_MS = 20
    settings.LLM_SIM_PREFILL_PER_TOKEN_MS = 0
    settings.LLM_SIM_DECODE_MS_PER_TOKEN = 4
    settings.LLM_SIM_JITTER = 0
    backend = CountingBackend(profile="bedrock", seed=5)
    ChatConsumer.orchestrator = Orchestrator(backend=backend, assembler=ContextAssembler(deadlines=GENEROUS))
    return backend


def _deltas(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "delta"]


class CoalescingTests:
    async def test_first_delta_alone_then_fewer_frames_with_every_word_in_order(
            self, settings: Any, paced: CountingBackend, chat: ChatClient) -> None:
        settings.CHAT_DELTA_COALESCE_MS = 20
        frames = await chat.ask(QUESTION, "c1")
        deltas = _deltas(frames)
        assert frames[-1]["type"] == "completed" and len(paced.sent) > 40
        assert deltas[0]["text"] == paced.sent[0].lstrip()  # the model's first token, not held for a window
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
        assert "".join(d["text"] for d in deltas) == "".join(paced.sent).lstrip()
        # A token every 4 ms, a frame at most every 20 ms: several tokens a frame.
        assert 2 < len(deltas) <= len(paced.sent) // 2

    async def test_window_zero_relays_a_frame_per_model_delta(self, settings: Any, paced: CountingBackend,
                                                               chat: ChatClient) -> None:
        settings.CHAT_DELTA_COALESCE_MS = 0
        deltas = _deltas(await chat.ask(QUESTION, "c2"))
        assert [d["text"] for d in deltas] == [paced.sent[0].lstrip(), *paced.sent[1:]]

    async def test_a_resumed_answer_continues_from_the_coalesced_log(self, settings: Any, paced: CountingBackend,
                                                                      chat: ChatClient) -> None:
        """Indices count frames, in the socket and in the stream log alike: a resume gets the same text."""
        settings.CHAT_DELTA_COALESCE_MS = 20
        frames = await chat.ask(QUESTION, "c3")
        await chat.send({"type": "resume", "id": "c3", "after": 1})
        replay = await chat.until("completed", "error")
        deltas = _deltas(frames)
        assert [d["index"] for d in _deltas(replay)] == list(range(2, len(deltas)))
        assert "".join(d["text"] for d in deltas[:2] + _deltas(replay)) == replay[-1]["text"] == frames[-1]["text"]


class FramePacerTests:
    def test_window_grows_with_the_loops_lateness_up_to_the_maximum(self, settings: Any) -> None:
        settings.CHAT_DELTA_COALESCE_MS = 20
        settings.CHAT_DELTA_COALESCE_MAX_MS = 100
        pacer = FramePacer()
        assert pacer.window() == pytest.approx(0.020)
        for _ in range(200):
            pacer.observe(0.004)  # the loop runs 4 ms late
        assert pacer.window() == pytest.approx(0.020 + 5 * 0.004, rel=0.01)
        for _ in range(200):
            pacer.observe(0.5)
        assert pacer.window() == pytest.approx(0.100)
        for _ in range(400):
            pacer.observe(-0.001)  # early wake-ups count as on time
        assert pacer.window() == pytest.approx(0.020, abs=0.0005)

    def test_zero_window_turns_coalescing_off_whatever_the_lateness(self, settings: Any) -> None:
        settings.CHAT_DELTA_COALESCE_MS = 0
        pacer = FramePacer()
        pacer.observe(1.0)
        assert pacer.window() == 0.0
