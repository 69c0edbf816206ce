"""The simulated backend: no model, a grounded responder streamed at a model's pace.

Profile `bedrock`: time to first token = base + per-prompt-token prefill, then one
token per decode interval, each with jitter (settings LLM_SIM_*). Profile
`instant`: no added delay. Faults can be injected for tests and load tests.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import AsyncIterator

from django.conf import settings

from ..compression import encoding
from .base import LLMRequest, LLMStreamError, LLMThrottled, LLMUnavailable, StreamEvent, TextDelta, Usage


@dataclass(frozen=True)
class Pace:
    prefill_base_ms: float
    prefill_per_token_ms: float
    decode_ms_per_token: float
    jitter: float

    @classmethod
    def from_settings(cls, profile: str) -> "Pace":
        if profile == "instant":
            return cls(0.0, 0.0, 0.0, 0.0)
        return cls(settings.LLM_SIM_PREFILL_BASE_MS, settings.LLM_SIM_PREFILL_PER_TOKEN_MS,
                   settings.LLM_SIM_DECODE_MS_PER_TOKEN, settings.LLM_SIM_JITTER)

    def first_token_seconds(self, prompt_tokens: int, rng: random.Random) -> float:
        base = self.prefill_base_ms + self.prefill_per_token_ms * prompt_tokens
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter))) / 1000

    def decode_seconds(self, rng: random.Random) -> float:
        return max(0.0, self.decode_ms_per_token * (1 + rng.uniform(-self.jitter, self.jitter))) / 1000


FAULT_KINDS = ("throttle", "stream_error", "stall", "cut")


def parse_fault_rates(spec: str) -> dict[str, float]:
    """`throttle:0.05,stall:0.01` -> {"throttle": 0.05, "stall": 0.01}."""
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, rate = item.partition(":")
        if kind not in FAULT_KINDS:
            raise ValueError(f"LLM_SIM_FAULTS: unknown fault {kind!r}; use {', '.join(FAULT_KINDS)}")
        try:
            rates[kind] = float(rate)
        except ValueError as exc:
            raise ValueError(f"LLM_SIM_FAULTS: {item!r} needs a rate such as {kind}:0.05") from exc
    return rates


@dataclass(frozen=True)
class Fault:
    """An injected failure: `throttle` (429 before the stream), `stream_error` / `stall` / `cut` after `after_tokens`."""

    kind: str
    after_tokens: int = 0


class SimulatedBackend:
    name = "simulated"

    def __init__(self, *, profile: str | None = None, seed: int | None = None) -> None:
        self.profile = profile or settings.LLM_SIMULATED_PROFILE
        self.pace = Pace.from_settings(self.profile)
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []  # consumed in order, one per call
        self.fault_rates = parse_fault_rates(settings.LLM_SIM_FAULTS)

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def _next_fault(self) -> Fault | None:
        """An injected fault first; otherwise one drawn at the rates of LLM_SIM_FAULTS (load tests)."""
        if self.faults:
            return self.faults.pop(0)
        for kind, rate in self.fault_rates.items():
            if self.rng.random() < rate:
                return Fault(kind, after_tokens=0 if kind == "throttle" else self.rng.randint(1, 20))
        return None

    @staticmethod
    def _tokens(request: LLMRequest) -> list[int]:
        from ..responder import write_answer

        text = write_answer(request.grounding) if request.grounding is not None else "…"
        if request.prefill:
            # Continuing: the responder writes the same answer for the same context; send what follows.
            text = text[len(request.prefill):] if text.startswith(request.prefill) else ""
        return encoding().encode_ordinary(text)[: request.max_tokens]

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        fault = self._next_fault()
        if fault and fault.kind == "throttle":
            raise LLMThrottled("simulated ThrottlingException before the stream", retry_after=0.05)
        loop = asyncio.get_running_loop()
        model_first_token = self.pace.first_token_seconds(request.prompt_tokens, self.rng)
        first_due = loop.time() + model_first_token  # from the call, as a remote model's clock runs
        # Writing the answer is the model's own work: it happens within its first-token time, on a thread
        # (a remote model's work costs the service's event loop nothing).
        token_ids = await asyncio.to_thread(self._tokens, request)
        await asyncio.sleep(max(0.0, first_due - loop.time()))
        # The model keeps its own pace, as a remote one does: tokens due while the event loop was busy
        # are all there when it gets back (read together, as from a socket's buffer), none is late twice.
        due = loop.time()
        pending = b""
        # Decoded in one call (not one per token): the simulation must not cost the service's event loop.
        for position, token_bytes in enumerate(encoding().decode_tokens_bytes(token_ids)):
            if fault and position == fault.after_tokens and fault.kind != "throttle":
                if fault.kind == "stall":
                    await asyncio.sleep(3600)
                if fault.kind == "cut":
                    raise LLMUnavailable(f"simulated cut connection after {position} tokens")
                raise LLMStreamError(f"simulated model stream error after {position} tokens")
            pending += token_bytes
            try:
                piece = pending.decode("utf-8")
            except UnicodeDecodeError:  # a multi-byte character split across tokens: wait for the rest
                continue
            pending = b""
            yield TextDelta(piece)
            if position + 1 < len(token_ids):
                due += self.pace.decode_seconds(self.rng)
                if due > loop.time() or not self.pace.decode_ms_per_token:
                    await asyncio.sleep(max(0.0, due - loop.time()))
        yield Usage(input_tokens=request.prompt_tokens, output_tokens=len(token_ids),
                    extra={"simulated": True, "profile": self.profile,
                           # The model's own time to first token: the service's overhead is what the client waits beyond it.
                           "model_first_token_ms": round(model_first_token * 1000, 2)})
