"""The orchestrator: the only caller of the model.

For one customer message: assemble the context (classification, entities and
sources in parallel under deadlines), compress it to the live budget, pick a
route, stream the model's deltas to the sink as they come, check the full answer,
then persist it and record its metrics. One policy for every backend: retries
only before the first token and inside the first-token deadline, a fallback
route, never a retry once text was sent, a stall counted as a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Protocol

from django.conf import settings
from django.db import DatabaseError, InterfaceError

from catalog.retrieval import get_index
from catalog.selectors import ProductFacts
from prefetch.selectors import PreparedAnswer
from prefetch.services import prefetch_enqueue, prefetch_outcome_record
from prefetch.speculation import speculation_match

from . import guardrails, metrics, selectors, services
from .assembly import AssembledContext, ContextAssembler, TurnInput
from .compression import CompressedPrompt, PromptCompressor, uncompressed
from .pacing import pacer
from .prompts import system_prompt
from .llm import get_backend
from .llm.base import LLMBackend, LLMError, LLMRequest, LLMStreamError, Route, TextDelta, Usage
from .models import TurnStatus
from .pii import mask_pii
from .threads import gate, run_background, run_background_now, run_db

logger = logging.getLogger(__name__)

# A database that restarts (failover, a fast restart) is back within seconds: the answer is saved then.
SAVE_RETRY_PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0)

# A prepared answer goes out as a stream would: its first few words at once, then the rest in a few
# frames (a stream's coalesced frames hold a few words each; these are all ready now).
PREPARED_FIRST = re.compile(r"\s*(?:\S+\s*){1,4}")
PREPARED_PIECE = re.compile(r"(?:\S+\s*){1,32}|\s+")


def prepared_pieces(text: str) -> list[str]:
    first = PREPARED_FIRST.match(text)
    if first is None:
        return [text] if text else []
    return [first.group(), *PREPARED_PIECE.findall(text[first.end():])]


class TurnSink(Protocol):
    """Where the answer goes (the consumer turns these into protocol frames)."""

    async def delta(self, index: int, text: str) -> None: ...

    async def completed(self, text: str, products: list[dict], metrics: dict) -> None: ...

    async def failed(self, code: str, message: str, retry_after: float | None = None) -> None: ...


@dataclass
class StreamOutcome:
    text: str = ""
    deltas: int = 0
    first_token_at: float | None = None
    usage: Usage | None = None
    route: Route | None = None
    retries: int = 0
    error: LLMError | None = None
    gaps: list[float] = field(default_factory=list)
    first_index: int = 0  # continuing an answer: the client has deltas 0 .. first_index - 1
    guardrail_flags: list[str] = field(default_factory=list)  # what the guardrails changed in the answer


def _answer_save(turn: TurnInput, context: AssembledContext, text: str, status: TurnStatus, reason: str,
                 presented_skus: list[str], turn_metrics: dict) -> None:
    """The answer as it ended."""
    services.assistant_turn_record(conversation_id=turn.conversation_id, client_message_id=turn.client_message_id,
                                   text=text, status=status, failure_reason=reason, intent=context.intent,
                                   product_skus=presented_skus, question_skus=context.named_skus, metrics=turn_metrics)


def _after_answer(turn: TurnInput, context: AssembledContext, presented: list[ProductFacts], *,
                  prefetch_next: bool, answer: str | None = None) -> None:
    """The next turn's memory; this turn's prefetch lookup counted; the prefetch (and speculation) for
    the next one queued. None of it is needed before the customer's next message.

    `answer`: the complete answer as saved, when this turn's memory is whole: the next memory is
    derived from it and this one; otherwise it is read back from the database."""
    memory = None
    if answer is not None and not turn.continuing and "memory" not in context.degraded:
        memory = selectors.memory_after_answer(
            context.memory, conversation_id=turn.conversation_id, question=mask_pii(turn.text), intent=context.intent,
            question_skus=context.named_skus, answer=mask_pii(answer), presented=[(p.sku, p.title) for p in presented])
    selectors.memory_snapshot_store(conversation_id=turn.conversation_id, memory=memory, replace=False)
    if not turn.continuing:  # the cut answer's turn counted this lookup already
        prefetch_outcome_record(conversation_id=turn.conversation_id, lookup=context.prefetch,
                                client_message_id=turn.client_message_id)
    if prefetch_next:
        prefetch_enqueue(context=context, session_key=turn.session_key, presented_ids=[p.id for p in presented])


@dataclass
class _Ready:
    """A turn prepared for its answer: a prepared (speculative) answer, or the model request."""

    context: AssembledContext
    verdict: str  # speculation's verdict on this turn ("" when nothing was prepared)
    prepared: PreparedAnswer | None = None
    prompt: CompressedPrompt | None = None
    routes: list[Route] = field(default_factory=list)
    request: LLMRequest | None = None


_STREAM_END = object()


class _NotAdmitted(Exception):
    """The message turned out to be one answered before: its model call is closed, nothing is sent."""


class _Admission:
    """The message's commit, run beside the assembly and the model call; checked before the turn's
    first output. How long that output waited for it is the turn's `commit_wait` timing."""

    def __init__(self, admitted: Callable[[], Awaitable[bool]] | None) -> None:
        self._admitted = admitted
        self._result: bool | None = None if admitted is not None else True

    async def wait(self, context: AssembledContext | None) -> bool:
        if self._result is None:
            # Awaited here, not in a task: a commit that is done costs no turn of the event loop.
            started = time.perf_counter()
            self._result = await self._admitted()  # type: ignore[misc]
            if context is not None:
                context.timings_ms["commit_wait"] = round((time.perf_counter() - started) * 1000, 3)
        return self._result

    async def settled(self, context: AssembledContext) -> bool:
        """After a stop: whether the message got saved (waiting for its commit, which a stop never
        cancels); a commit that failed leaves nothing to keep."""
        try:
            return await asyncio.shield(self.wait(context))
        except Exception:  # noqa: BLE001 - the commit's own failure is logged where it ran
            return False


async def _read_stream(stream: AsyncIterator, inbox: asyncio.Queue, outcome: StreamOutcome, *,
                       last: float | None = None) -> None:
    """Everything the model sends, into `inbox` as it arrives, then its end or its error.

    The gaps between the model's deltas are recorded here, as the model made them (the inter-token
    metric); `last`: when the delta before these arrived.
    """
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                now = time.perf_counter()
                if last is not None:
                    outcome.gaps.append(now - last)
                last = now
            inbox.put_nowait(event)
    except Exception as exc:  # noqa: BLE001 - handed to the relay, which applies the policy
        inbox.put_nowait(exc)
        return
    inbox.put_nowait(_STREAM_END)


class Orchestrator:
    def __init__(self, *, backend: LLMBackend | None = None, assembler: ContextAssembler | None = None) -> None:
        self.backend = backend or get_backend()
        self.assembler = assembler or ContextAssembler()

    # --- routes -----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """Primary route first, then the fallback (a secondary model), if one is configured."""
        if self.backend.name == "simulated":
            primary = Route("simulated", f"simulated-{getattr(self.backend, 'profile', 'bedrock')}")
        elif self.backend.name == "bedrock":
            primary = Route("on_demand", settings.BEDROCK_MODEL_ID)
        elif self.backend.name == "openai":
            primary = Route("openai", settings.OPENAI_MODEL or "default")
        else:
            primary = Route(self.backend.name, self.backend.name)
        routes = [primary]
        if settings.LLM_FALLBACK_MODEL_ID and settings.LLM_FALLBACK_MODEL_ID != primary.model_id:
            routes.append(Route("secondary", settings.LLM_FALLBACK_MODEL_ID))
        return routes

    # --- the turn ---------------------------------------------------------------------------

    async def answer(self, turn: TurnInput, sink: TurnSink, *, received_at: float | None = None, prefill: str = "",
                     first_index: int = 0, admitted: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Answer `turn`, relaying deltas to `sink`.

        `prefill` continues an answer a dropped socket cut short (`resume`): the model writes what
        follows it, deltas are numbered from `first_index` (the ones the client has), and the
        `completed` text and the saved turn are the whole answer.

        `admitted`: the message is being committed while its context is assembled and the model
        reads the prompt; awaited before anything reaches the sink (the first delta, an error, a
        prepared answer) and before the answer is saved. False: not to be answered here (a message
        id answered before): the model call is closed and nothing is sent.
        """
        received_at = received_at or time.perf_counter()
        if prefill:
            turn = dataclasses.replace(turn, continuing=True)
        admission = _Admission(admitted)
        # Until the model is called, this turn is the process's foreground: background jobs wait (chat.threads).
        with gate.foreground():
            ready = await self._prepare(turn, admission, prefill)
        context, verdict = ready.context, ready.verdict
        if ready.prepared is not None:
            if await admission.wait(context):
                await self._serve_prepared(turn, context, ready.prepared, sink, received_at)
            return
        prompt, routes, request = ready.prompt, ready.routes, ready.request
        overhead = time.perf_counter() - received_at
        metrics.ORCHESTRATOR_OVERHEAD.labels(context.intent).observe(overhead)
        outcome = StreamOutcome(text=prefill, first_index=first_index)
        exact_count = self._exact_count(request)
        try:
            await self._stream(request, routes, sink, outcome, received_at, admission, context)
        except _NotAdmitted:
            if exact_count:
                exact_count.cancel()
            return
        except asyncio.CancelledError:
            if exact_count:
                exact_count.cancel()
            # `stop` or a closed socket: the upstream call is already closed; keep what was said (once
            # the message itself is saved: the commit goes on whatever happens to this task).
            if await admission.settled(context):
                await asyncio.shield(self._finish(turn, context, prompt, outcome, received_at, overhead,
                                                  TurnStatus.PARTIAL if outcome.text else TurnStatus.FAILED,
                                                  "stopped"))
            raise
        if not await admission.wait(context):  # an empty answer or an error: after the commit too
            return
        if outcome.error is not None:
            status = TurnStatus.PARTIAL if outcome.text else TurnStatus.FAILED
            await sink.failed(outcome.error.code, self._error_message(outcome), outcome.error.retry_after)
            # Shielded: a socket closing now must not lose the saved turn or its bookkeeping.
            await asyncio.shield(self._finish(turn, context, prompt, outcome, received_at, overhead, status,
                                              str(outcome.error)))
            return
        presented = await self._guard(turn, context, outcome)
        turn_metrics = self._turn_metrics(context, prompt, outcome, received_at, overhead)
        if exact_count:
            turn_metrics["exact_prompt_tokens"] = await self._exact_count_result(exact_count)
        if verdict:
            turn_metrics["speculation"] = verdict  # an answer was prepared, and why it was not this one
        await sink.completed(outcome.text, [p.card() for p in presented], turn_metrics)
        await asyncio.shield(self._finish(turn, context, prompt, outcome, received_at, overhead, TurnStatus.COMPLETE, "",
                           presented=presented, turn_metrics=turn_metrics))

    async def _prepare(self, turn: TurnInput, admission: _Admission, prefill: str) -> _Ready:
        """The context, then an answer prepared for it or the model request."""
        # Is provisioned throughput up (InService, in its window)? Asked beside the assembly, not before
        # it; and only where there is any: a task costs the turn a pass of the event loop.
        provisioned = asyncio.create_task(self._provisioned_route()) if self._may_provision() else None
        try:
            context = await self.assembler.assemble(turn)
        except Exception:
            if provisioned is not None:
                provisioned.cancel()
            await admission.wait(None)  # the message is committed (and acknowledged) before the error goes out
            raise
        prepared, verdict = speculation_match(context) if not prefill else (None, "")
        if prepared is not None:
            if provisioned is not None:
                provisioned.cancel()
            return _Ready(context, verdict, prepared=prepared)
        compressing = time.perf_counter()
        prompt = self.compress(context)
        context.timings_ms["compression"] = round((time.perf_counter() - compressing) * 1000, 3)
        routes = self.routes()
        provisioned_route = await provisioned if provisioned is not None else None
        if provisioned_route is not None:
            routes = [provisioned_route, *routes]  # a 429 there falls back to on-demand (policy below)
        return _Ready(context, verdict, prompt=prompt, routes=routes,
                      request=self.request_for(context, prompt, routes[0], prefill=prefill))

    def request_for(self, context: AssembledContext, prompt: CompressedPrompt, route: Route, *,
                    max_tokens: int | None = None, prefill: str = "") -> LLMRequest:
        return LLMRequest(system=prompt.system, stable_context=prompt.stable_context,
                          volatile_context=prompt.volatile_context, messages=prompt.messages,
                          max_tokens=max_tokens or settings.LLM_MAX_OUTPUT_TOKENS, route=route,
                          prompt_tokens=prompt.prompt_tokens, grounding=context, prefill=prefill)

    async def _serve_prepared(self, turn: TurnInput, context: AssembledContext, prepared: PreparedAnswer,
                              sink: TurnSink, received_at: float) -> None:
        """Stream the answer speculation wrote for exactly this question, then finish as any answer."""
        overhead = time.perf_counter() - received_at
        metrics.ORCHESTRATOR_OVERHEAD.labels(context.intent).observe(overhead)
        outcome = StreamOutcome(route=Route("speculative", prepared.model_id),
                                usage=Usage(input_tokens=prepared.prompt_tokens, output_tokens=prepared.output_tokens))
        try:
            for piece in prepared_pieces(prepared.text):
                now = time.perf_counter()
                outcome.first_token_at = outcome.first_token_at or now
                await sink.delta(outcome.deltas, piece)
                outcome.deltas += 1
                outcome.text += piece
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(turn, context, self.compress(context), outcome, received_at, overhead,
                                              TurnStatus.PARTIAL, "stopped"))
            raise
        prompt = self.compress(context)  # after the text is out: the turn's metrics are recorded like any other
        presented = await self._guard(turn, context, outcome)
        turn_metrics = self._turn_metrics(context, prompt, outcome, received_at, overhead)
        turn_metrics.update(speculative=True, speculation="served", prompt_tokens=prepared.prompt_tokens)
        await sink.completed(outcome.text, [p.card() for p in presented], turn_metrics)
        await asyncio.shield(self._finish(turn, context, prompt, outcome, received_at, overhead, TurnStatus.COMPLETE, "",
                                          presented=presented, turn_metrics=turn_metrics))

    async def _guard(self, turn: TurnInput, context: AssembledContext, outcome: StreamOutcome) -> list[ProductFacts]:
        """The guardrails on the whole answer: `outcome.text` becomes what `completed` shows and what is saved.

        The deltas are out already; the widget replaces them with the `completed` text. Returns the
        products the answer presents.
        """
        # CPU work (milliseconds on a long answer): on a thread, so other sockets' deltas are not held up.
        guarded = await run_db(lambda: guardrails.guard_answer(outcome.text, context, catalog=get_index()))
        if guarded.flags:
            logger.warning("guardrails changed answer %s: %s", turn.client_message_id, ", ".join(guarded.flags))
            for code in sorted(guarded.codes):
                metrics.GUARDRAIL_FLAGS.labels(code).inc()
            outcome.guardrail_flags = sorted(guarded.codes)
        outcome.text = guarded.text
        return guarded.products

    def _may_provision(self) -> bool:
        return self.backend.name == "bedrock" and settings.PROVISIONED_THROUGHPUT_ENABLED

    async def _provisioned_route(self) -> Route | None:
        from throughput.selectors import provisioned_route

        try:
            return await run_db(provisioned_route)
        except Exception:  # noqa: BLE001 - never let capacity bookkeeping stand between the customer and the model
            return None

    def _exact_count(self, request: LLMRequest) -> asyncio.Task | None:
        """The provider's exact prompt count (Bedrock CountTokens), asked beside the call, never before it."""
        count = getattr(self.backend, "count_tokens", None)
        if count is None or not settings.BEDROCK_COUNT_TOKENS:
            return None
        return asyncio.create_task(count(request))

    @staticmethod
    async def _exact_count_result(task: asyncio.Task) -> int | None:
        try:
            return await asyncio.wait_for(task, timeout=1.0)
        except Exception:  # noqa: BLE001 - an estimate is still recorded; the exact count is a bonus
            return None

    def compress(self, context: AssembledContext) -> CompressedPrompt:
        if self.assembler.naive:  # the benchmark's naive pipeline: everything, verbatim, no stable prefix
            return uncompressed(system=system_prompt(context.intent, full=True), chunks=context.chunks(),
                                history=context.memory.full_history or context.memory.recent, page=context.page,
                                message=context.message)
        config = context.config
        compressor = PromptCompressor(config.budget)
        return compressor.compress(
            system=system_prompt(context.intent), summary=context.memory.summary, chunks=context.chunks(),
            turns=context.memory.recent, page=context.page, page_fields=config.page_fields.get(context.intent, []),
            message=context.message, raw_system=system_prompt(context.intent, full=True),
            raw_history_tokens=context.memory.raw_history_tokens)

    async def _stream(self, request: LLMRequest, routes: list[Route], sink: TurnSink, outcome: StreamOutcome,
                      received_at: float, admission: _Admission, context: AssembledContext) -> None:
        """Stream from the first route that answers; retry and fall back only before the first token."""
        deadline = received_at + settings.LLM_FIRST_TOKEN_DEADLINE_SECONDS
        attempts = [(route, n) for route in routes for n in range(settings.LLM_MAX_RETRIES + 1)]
        for attempt, (route, retry) in enumerate(attempts):
            request.route = route
            outcome.route = route
            outcome.error = None
            try:
                await self._relay(request, sink, outcome, deadline, admission, context)
                return
            except LLMError as exc:
                outcome.error = exc
                if outcome.deltas or not exc.retryable:
                    return  # text was sent: never retry (it would duplicate text)
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or attempt == len(attempts) - 1:
                    return
                reason = type(exc).__name__
                next_route = attempts[attempt + 1][0]
                if next_route != route:
                    metrics.LLM_FALLBACKS.labels(route.name, next_route.name).inc()
                else:
                    metrics.LLM_RETRIES.labels(self.backend.name, reason).inc()
                    backoff = settings.LLM_RETRY_BASE_SECONDS * (2 ** retry) * random.uniform(0.5, 1.5)
                    await asyncio.sleep(min(backoff, max(0.0, remaining - 0.05), exc.retry_after or backoff))
                outcome.retries += 1

    async def _relay(self, request: LLMRequest, sink: TurnSink, outcome: StreamOutcome, deadline: float,
                     admission: _Admission, context: AssembledContext) -> None:
        """Relay the model's deltas as they come: the first at once, the rest at most one frame per
        window (chat.pacing: what arrived meanwhile goes out together, in order; 0: a frame each).

        The first delta is read here and sent straight on, once the message is committed (it almost
        always is by then: the commit runs while the model reads the prompt). After it a reader task
        pulls the stream into an inbox, so waiting for the next frame's time never cancels a read
        from the model.
        """
        window = pacer.window()
        stream: AsyncIterator = self.backend.stream(request)
        inbox: asyncio.Queue = asyncio.Queue()
        reader: asyncio.Task | None = None
        pending: list[str] = []
        sent_at = 0.0

        async def flush() -> None:
            nonlocal sent_at
            text = "".join(pending)
            pending.clear()
            if outcome.first_token_at is None:
                outcome.first_token_at = time.perf_counter()
            sent_at = time.perf_counter()
            await sink.delta(outcome.first_index + outcome.deltas, text)
            outcome.deltas += 1
            outcome.text += text

        def take(event: TextDelta | Usage) -> None:
            if isinstance(event, Usage):
                outcome.usage = event
                return
            text = event.text
            if outcome.deltas == 0 and not pending and outcome.text[-1:].isspace():
                text = text.lstrip()  # the prefill ended in a space the model repeats
            if text:
                pending.append(text)

        try:
            # Up to the first word, without a task in between: one turn of the event loop less to wait.
            try:
                async with asyncio.timeout(max(0.001, deadline - time.perf_counter())):
                    while not pending:
                        event = await anext(stream, _STREAM_END)
                        if event is _STREAM_END:
                            return
                        take(event)
            except TimeoutError as exc:
                raise LLMError("no first token before the deadline") from exc
            first_at = time.perf_counter()
            if not await admission.wait(context):
                raise _NotAdmitted
            await flush()
            reader = asyncio.create_task(_read_stream(stream, inbox, outcome, last=first_at))
            while True:
                if pending:  # a frame is due at `sent_at + window`: take everything that came by then
                    due = sent_at + window
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    pacer.observe(time.perf_counter() - due)
                    window = pacer.window()
                    events = []
                else:
                    try:
                        async with asyncio.timeout(settings.LLM_STALL_SECONDS):
                            events = [await inbox.get()]
                    except TimeoutError as exc:
                        raise LLMStreamError("the stream stalled") from exc
                while not inbox.empty():
                    events.append(inbox.get_nowait())
                for event in events:
                    if isinstance(event, (TextDelta, Usage)):
                        take(event)
                        if pending and not window:  # coalescing off: a frame per delta
                            await flush()
                        continue
                    if pending:  # the end of the stream, or its error: what came before it goes out first
                        await flush()
                    if isinstance(event, BaseException):
                        raise event
                    return
                if pending and time.perf_counter() - sent_at >= window:
                    await flush()
        finally:
            if reader is not None:
                if not reader.done():
                    reader.cancel()
                await asyncio.wait([reader])
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    def _error_message(outcome: StreamOutcome) -> str:
        if outcome.text:
            return "The answer was interrupted. What you see so far is saved; please ask again to get the rest."
        return "The assistant is unavailable right now. Please try again in a moment."

    def _turn_metrics(self, context: AssembledContext, prompt: CompressedPrompt, outcome: StreamOutcome,
                      received_at: float, overhead: float) -> dict:
        now = time.perf_counter()
        usage = outcome.usage or Usage()
        return {
            "first_token_ms": round((outcome.first_token_at - received_at) * 1000, 1) if outcome.first_token_at else None,
            "total_ms": round((now - received_at) * 1000, 1),
            "prompt_tokens": prompt.prompt_tokens,
            "raw_prompt_tokens": prompt.raw_tokens,
            "output_tokens": usage.output_tokens or outcome.deltas,
            "compression_ratio": prompt.ratio,
            "prefetch_hit": context.prefetch_hit,
            "route": outcome.route.name if outcome.route else None,
            "backend": self.backend.name,
            "intent": context.intent,
            "previous_intent": context.memory.previous_intent,
            "assembly_ms": context.assembly_ms,
            "commit_wait_ms": context.timings_ms.get("commit_wait"),
            "compression_ms": context.timings_ms.get("compression"),
            "overhead_ms": round(overhead * 1000, 2),
            "degraded": context.degraded,
            "provider_cache_hit": usage.cache_hit,
            "retries": outcome.retries,
            "model_first_token_ms": usage.extra.get("model_first_token_ms"),  # where the backend knows it
            "guardrail_flags": outcome.guardrail_flags,
        }

    async def _finish(self, turn: TurnInput, context: AssembledContext, prompt: CompressedPrompt,
                      outcome: StreamOutcome, received_at: float, overhead: float, status: TurnStatus, reason: str,
                      *, presented: list[ProductFacts] | None = None, turn_metrics: dict | None = None) -> None:
        presented = presented or []
        turn_metrics = turn_metrics or self._turn_metrics(context, prompt, outcome, received_at, overhead)
        self._observe(context, prompt, outcome, turn_metrics, status)
        for attempt, pause in enumerate((*SAVE_RETRY_PAUSES, None)):
            try:
                # Safe to repeat (one row per message id): a database restarting now loses nothing.
                # At once (a browser that reconnects, a transcript reloaded, find it saved), off the ORM pool.
                await run_background_now(_answer_save, turn, context, outcome.text, status, reason,
                                         [p.sku for p in presented], turn_metrics)
                break
            except (DatabaseError, InterfaceError) as exc:
                if pause is None:
                    logger.exception("could not save the assistant turn %s", turn.client_message_id)
                    break
                logger.warning("saving the assistant turn %s failed (%s); again in %.1f s (attempt %d)",
                               turn.client_message_id, exc, pause, attempt + 1)
                await asyncio.sleep(pause)
            except Exception:  # noqa: BLE001 - the customer already has the answer; log loudly
                logger.exception("could not save the assistant turn %s", turn.client_message_id)
                break
        try:
            complete = status == TurnStatus.COMPLETE and not self.assembler.naive
            await run_background(_after_answer, turn, context, presented, prefetch_next=complete,
                                 answer=outcome.text if complete else None)
        except Exception:  # noqa: BLE001 - speculation never costs the customer anything
            logger.exception("prefetch bookkeeping failed for %s", turn.client_message_id)

    def _observe(self, context: AssembledContext, prompt: CompressedPrompt, outcome: StreamOutcome,
                 turn_metrics: dict, status: TurnStatus) -> None:
        route = turn_metrics["route"] or "none"
        labels = (self.backend.name, route, context.intent)
        if turn_metrics["first_token_ms"] is not None:
            metrics.LLM_FIRST_TOKEN.labels(*labels).observe(turn_metrics["first_token_ms"] / 1000)
        if status == TurnStatus.COMPLETE:
            metrics.LLM_TOTAL.labels(*labels).observe(turn_metrics["total_ms"] / 1000)
        inter = metrics.LLM_INTER_TOKEN.labels(self.backend.name)
        for gap in outcome.gaps:
            inter.observe(gap)
        metrics.PROMPT_TOKENS.labels(context.intent).observe(prompt.prompt_tokens)
        metrics.PROMPT_RAW_TOKENS.labels(context.intent).observe(prompt.raw_tokens)
        metrics.COMPRESSION_RATIO.labels(context.intent).observe(prompt.ratio)
        metrics.CONTEXT_ASSEMBLY.labels(context.intent).observe(context.assembly_ms / 1000)
        for source, reason in context.degraded.items():
            metrics.CONTEXT_DEGRADED.labels(source, reason).inc()
        metrics.OUTPUT_TOKENS.labels(self.backend.name, route).inc(turn_metrics["output_tokens"] or 0)
        metrics.TURNS.labels(status.value, context.intent).inc()
        if outcome.usage is not None:
            metrics.PROVIDER_CACHE.labels(self.backend.name, "hit" if outcome.usage.cache_hit else "miss").inc()
