"""Speculation: the answer to the single most likely follow-up, prepared before it is asked.

After a recommendation, the customer most often asks about the first series it listed. The
worker assembles that follow-up's context ("Tell me more about the first one.") exactly as the
real turn would, compresses it, and (with pre-generation on) has the model write the answer;
generating it also warms the provider's prefix cache (Bedrock cachePoint, llama.cpp server).
When the next message resolves to the same intent and product and asks nothing more specific,
the orchestrator streams the prepared answer at once, through the same guardrails; anything
else discards it. Every token spent is counted against a per-conversation and a daily budget.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Coroutine, TypeVar
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.utils import timezone

from . import metrics
from .selectors import (PREDICTION_TTL, PreparedAnswer, SpeculationConfig, cache_get_many, prediction_key,
                        prefetch_config, speculation_key)

if TYPE_CHECKING:
    from catalog.selectors import ProductFacts
    from chat.assembly import AssembledContext
    from chat.llm.base import LLMBackend, LLMRequest

logger = logging.getLogger(__name__)
T = TypeVar("T")

# How the predicted follow-up is asked: the most common phrasing, so its context is the real one's.
PREDICTED_MESSAGES = {"product_question": "Tell me more about the first one."}
SPECULATION_TTL = PREDICTION_TTL
# A queued speculation older than this is dropped: the customer has likely asked already.
QUEUE_WAIT_SECONDS = 20.0
# Backends whose model runs in this process: a speculative generation would hold the model the
# next live answer needs, so they prepare nothing.
IN_PROCESS_BACKENDS = {"local"}
# Backends with a provider-side prefix cache a one-token call warms (when pre-generation is off).
PREFIX_CACHE_BACKENDS = {"bedrock", "openai"}
BUDGET_TZ = ZoneInfo("Asia/Tokyo")
# Each context source's deadline in the worker, where nobody waits for it.
WORKER_SOURCE_DEADLINE = 5.0


# --- Does the next message ask what was prepared? -------------------------------------------

# Words of a plain "tell me more about <it>" request, in English. Anything else in the message
# (price, stock, volumes, "is it good", "for kids") asks something the prepared answer may not say.
_GENERIC_WORDS = frozenset("""
    tell me more about the a an on of it this that please pls can could would you your i i'd id i'm we what whats
    what's is was like info information details detail describe description know want to give show some little
    bit hear for first second third 1st 2nd 3rd one number no and so ok okay hmm oh then how us sounds seems
    looks interesting listed list mentioned recommended suggested suggestion series manga title book pick story
    plot premise
""".split())
# Japanese particles and phrases of the same request, longest removed first.
_GENERIC_JA = sorted("""
    について 詳しく くわしく 詳細 教えて おしえて ください 下さい もっと もう少し 知りたい 内容 どんな
    最初の 最初 一つ目の 一つ目 1つ目の 1つ目 １つ目の １つ目 一番目の 一番目 二つ目の 二つ目 2つ目の 2つ目
    三つ目の 三つ目 3つ目の 3つ目 1番目の 1番目 2番目の 2番目 3番目の 3番目 それ その この 作品 漫画 マンガ まんが
    あらすじ ストーリー 話 ですか です って の は を か ね よ
""".split(), key=len, reverse=True)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def asks_only_for_details(message: str, product: ProductFacts) -> bool:
    """Whether `message` asks for nothing beyond a general description of `product`."""
    rest = message.lower()
    for title in sorted({product.title, product.title_en or "", product.title_ja or ""} - {""}, key=len, reverse=True):
        rest = rest.replace(title.lower(), " ")
    for phrase in _GENERIC_JA:
        rest = rest.replace(phrase, " ")
    return all(word in _GENERIC_WORDS for word in _WORD.findall(rest))


def context_fingerprint(context: AssembledContext) -> str:
    """What a prepared answer states and must still hold when it is shown: the product's title,
    price and stock, and the promotions it mentions."""
    product = context.focus
    if product is None:
        return ""
    promotions = ",".join(sorted(p.code for p in context.promotions))
    return f"{product.sku}|{product.title}|{product.price_yen}|{int(bool(product.in_stock))}|{promotions}"


def speculation_match(context: AssembledContext) -> tuple[PreparedAnswer | None, str]:
    """The prepared answer when this turn asks exactly what it answers, and the verdict (counted).

    Served only when the turn resolved to the predicted intent and product, asks for nothing
    more specific, and the product and its promotions are still what the answer says. The
    verdict is "" when nothing was prepared for this turn.
    """
    prepared = context.prefetch.prepared if context.prefetch is not None else None
    if prepared is None:
        return None, ""
    focus = context.focus
    if context.intent != prepared.to_intent:
        verdict = "discarded_other_intent"
    elif focus is None or focus.id != prepared.product_id:
        verdict = "discarded_other_product"
    elif not asks_only_for_details(context.message, focus):
        verdict = "discarded_specific_question"
    elif context_fingerprint(context) != prepared.fingerprint:
        verdict = "discarded_product_changed"
    else:
        verdict = "served"
    metrics.SPECULATIONS.labels(verdict).inc()
    return (prepared if verdict == "served" else None), verdict


# --- The token budget --------------------------------------------------------------------------


def _budget_keys(conversation_id: str, spec: SpeculationConfig) -> list[tuple[str, int, int]]:
    day = timezone.now().astimezone(BUDGET_TZ).date().isoformat()
    return [(f"prefetch:speculation:tokens:day:{day}", spec.daily_budget, int(timedelta(days=2).total_seconds())),
            (f"prefetch:speculation:tokens:conversation:{conversation_id}", spec.conversation_budget,
             int(timedelta(days=1).total_seconds()))]


def speculative_budget_reserve(*, conversation_id: str, tokens: int, spec: SpeculationConfig) -> bool:
    """Reserve `tokens` in the day's and the conversation's budget; False (nothing reserved) when over.

    Atomic per key (cache incr: Redis INCRBY in scaled mode). A cache that cannot count spends nothing.
    """
    reserved: list[str] = []
    try:
        for key, limit, ttl in _budget_keys(conversation_id, spec):
            cache.add(key, 0, ttl)
            reserved.append(key)
            if cache.incr(key, tokens) > limit:
                break
        else:
            return True
    except Exception:  # noqa: BLE001
        logger.warning("speculation: the token budget cannot be counted; preparing nothing", exc_info=True)
    _budget_release(reserved, tokens)
    return False


def speculative_budget_settle(*, conversation_id: str, reserved: int, spent: int, spec: SpeculationConfig) -> None:
    """Give back what a reservation did not spend."""
    if reserved > spent:
        _budget_release([key for key, _, _ in _budget_keys(conversation_id, spec)], reserved - spent)


def _budget_release(keys: list[str], tokens: int) -> None:
    for key in keys:
        try:
            cache.decr(key, tokens)
        except Exception:  # noqa: BLE001 - an expired or unreachable counter has nothing to give back
            pass


# --- Preparing ---------------------------------------------------------------------------------


def _prediction_current(conversation_id: str, predicted_at: float) -> bool:
    """Is the prediction this speculation serves still the conversation's latest?"""
    record = cache_get_many([prediction_key(conversation_id)]).get(prediction_key(conversation_id))
    return isinstance(record, dict) and record.get("at") == predicted_at


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on this process's one speculation loop (a thread of its own, started on first use).

    Not asyncio.run per task: the backends keep their HTTP clients per event loop, and a new
    loop per speculation would leave a dead client behind each time and reuse no connection.
    """
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="mangaassist-speculation", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _loop).result()


async def _generate(backend: LLMBackend, request: LLMRequest) -> tuple[str, int]:
    """The whole answer and its output tokens, as the backend streams it."""
    from chat.llm.base import TextDelta, Usage

    text, output_tokens = "", 0
    stream = backend.stream(request)
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                text += event.text
            elif isinstance(event, Usage):
                output_tokens = event.output_tokens
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return text, output_tokens


def speculation_prepare(*, conversation_id: str, session_key: str, page: dict, from_intent: str, product_id: int,
                        predicted_at: float) -> str:
    """Prepare the follow-up the answer to a `from_intent` turn most likely gets; the outcome, as counted.

    Outcomes: prepared, prewarmed, disabled (no longer likely enough, or switched off), stale (the
    conversation moved on), unresolved (the prediction does not resolve to `product_id`), degraded
    (a context source failed), over_budget, truncated (longer than the speculative limit: never
    shown cut), failed, unsupported.
    """
    outcome = _prepare(conversation_id=conversation_id, session_key=session_key, page=page,
                       from_intent=from_intent, product_id=product_id, predicted_at=predicted_at)
    metrics.SPECULATIONS.labels(outcome).inc()
    return outcome


def _prepare(*, conversation_id: str, session_key: str, page: dict, from_intent: str, product_id: int,
             predicted_at: float) -> str:
    from chat.assembly import ContextAssembler, TurnInput
    from chat.compression import count_tokens
    from chat.llm.base import LLMError
    from chat.orchestrator import Orchestrator

    started = time.monotonic()
    config = prefetch_config()
    rule = config.speculated(from_intent)
    if rule is None:
        return "disabled"
    if not _prediction_current(conversation_id, predicted_at):
        return "stale"
    orchestrator = Orchestrator()
    if orchestrator.backend.name in IN_PROCESS_BACKENDS:
        return "unsupported"
    spec = config.speculation
    turn = TurnInput(uuid.UUID(conversation_id), f"speculation-{predicted_at}", PREDICTED_MESSAGES[rule.to_intent],
                     page or {}, session_key)
    # Off the customer's path: every source gets the time it needs; a context still missing one
    # would be an answer the real turn does not write.
    assembler = ContextAssembler(deadlines={name: WORKER_SOURCE_DEADLINE for name in orchestrator.assembler.deadlines})
    context = _run(assembler.assemble(turn))
    if context.intent != rule.to_intent or context.focus is None or context.focus.id != product_id:
        return "unresolved"
    if context.degraded:
        return "degraded"
    prompt = orchestrator.compress(context)
    prewarm_only = not spec.pregenerate
    if prewarm_only and orchestrator.backend.name not in PREFIX_CACHE_BACKENDS:
        return "unsupported"  # nothing outside this process to warm
    max_tokens = 1 if prewarm_only else spec.max_output_tokens
    reserved = prompt.prompt_tokens + max_tokens
    if not speculative_budget_reserve(conversation_id=conversation_id, tokens=reserved, spec=spec):
        return "over_budget"
    request = orchestrator.request_for(context, prompt, orchestrator.routes()[0], max_tokens=max_tokens)
    text, output_tokens = "", 0
    try:
        text, output_tokens = _run(_generate(orchestrator.backend, request))
    except LLMError as exc:
        logger.info("speculation: the model call failed (%s)", exc)
        return "failed"
    finally:
        output_tokens = output_tokens or (count_tokens(text) if text else 0)
        spent = prompt.prompt_tokens + output_tokens
        speculative_budget_settle(conversation_id=conversation_id, reserved=reserved, spent=spent, spec=spec)
        metrics.SPECULATIVE_TOKENS.labels("prompt").inc(prompt.prompt_tokens)
        metrics.SPECULATIVE_TOKENS.labels("output").inc(output_tokens)
    if prewarm_only:
        return "prewarmed"
    if not text.strip():
        return "failed"
    if output_tokens >= max_tokens:
        return "truncated"
    if not _prediction_current(conversation_id, predicted_at):
        return "stale"  # the customer asked while it was being written
    prepared = PreparedAnswer(at=predicted_at, from_intent=from_intent, to_intent=rule.to_intent,
                              product_id=product_id, fingerprint=context_fingerprint(context), text=text,
                              prompt_tokens=prompt.prompt_tokens, output_tokens=output_tokens,
                              model_id=request.route.model_id, seconds=round(time.monotonic() - started, 4))
    try:
        cache.set(speculation_key(conversation_id), prepared, SPECULATION_TTL)
    except Exception:  # noqa: BLE001
        logger.warning("speculation: could not store the prepared answer", exc_info=True)
        return "failed"
    return "prepared"
