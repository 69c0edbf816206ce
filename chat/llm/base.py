"""The one small interface every model backend implements: stream text for a prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    text: str


@dataclass(frozen=True)
class Route:
    """Where the call goes: a model id (on-demand) or a provisioned-throughput ARN."""

    name: str  # "on_demand", "provisioned", "simulated", "secondary", ...
    model_id: str


@dataclass
class LLMRequest:
    """A compressed prompt, ordered from the most stable part to the most volatile.

    `system` and `stable_context` form the cacheable prefix (Bedrock cachePoint,
    llama.cpp KV reuse); `messages` end with the customer's message.
    """

    system: str
    stable_context: str
    volatile_context: str
    messages: list[Message]
    max_tokens: int
    route: Route
    prompt_tokens: int = 0
    # The answer so far, when continuing one a dropped socket cut short (`resume`): the model
    # writes what follows it (an assistant prefill), never the whole answer again.
    prefill: str = ""
    # Structured facts the prompt was written from. Only the simulated backend
    # reads it (it has no model to read the prompt); real backends ignore it.
    grounding: Any = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    provider_latency_ms: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def cache_hit(self) -> bool:
        return self.cache_read_tokens > 0


StreamEvent = TextDelta | Usage


class LLMError(Exception):
    """A model call failed. `retryable` says whether trying again may succeed."""

    code = "upstream_unavailable"
    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMThrottled(LLMError):
    retryable = True


class LLMUnavailable(LLMError):
    retryable = True


class LLMStreamError(LLMError):
    """The stream broke after it started (never retried: text was already sent)."""


class LLMBackend(Protocol):
    name: str

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        """Yield text deltas as the model produces them, then one `Usage`.

        Closing the iterator (aclose) cancels the upstream call.
        """
        ...
