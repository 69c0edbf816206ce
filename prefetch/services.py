"""Writes of the prefetch app: warming the cache for the likely next turn, recording how it went,
and relearning the transition probabilities from what customers actually asked next.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from catalog.retrieval import Filters, LexicalIndex, get_index
from chat import assembly as chat_assembly
from chat import metrics as chat_metrics
from chat.intents import INTENTS
from chat.models import TurnRecord

from . import metrics
from .models import (PROBABILITY_EPSILON, STARTING_TRANSITIONS, PrefetchOutcome, PrefetchSettings, ProposalStatus,
                     Transition, TransitionProposal)
from .selectors import (CART_TTL, PREDICTION_TTL, SIMILAR_TTL, TRENDING_KEY, TRENDING_TTL, PrefetchLookup,
                        cache_get_many, cart_key, cart_summary, kind_keys, prediction_key, prefetch_config,
                        prefetch_settings, similar_key)

if TYPE_CHECKING:
    from chat.assembly import AssembledContext

logger = logging.getLogger(__name__)

# How long a queued prefetch may wait for a worker before it is dropped, beyond its own deadline:
# the customer reads the answer and types for longer than that, and a backlog must not replay
# prefetches for conversations that have moved on.
QUEUE_WAIT_SECONDS = 8.0


def _cache_set_many(values: dict[str, Any], timeout: int) -> None:
    try:
        cache.set_many(values, timeout)
    except Exception:  # noqa: BLE001 - a prefetch that cannot write is a prefetch that did not happen
        logger.warning("prefetch: cache write failed", exc_info=True)


def _distinct_ids(product_ids: Iterable[Any]) -> list[int]:
    return list(dict.fromkeys(int(pid) for pid in product_ids))


# --- The prediction record ---------------------------------------------------------------------


def prediction_record_save(*, conversation_id: str, from_intent: str, predicted: dict[str, list[str]],
                           product_ids: list[int], at: float, keys: list[str]) -> bool:
    """Say what the turn `from_intent` expects next, unless a newer turn already said so.

    Written when the prefetch is queued (no keys yet: a next turn arriving first is a miss)
    and again when it finished (the keys it warmed or found warm).
    """
    key = prediction_key(conversation_id)
    existing = cache_get_many([key]).get(key)
    # Not atomic; the race it leaves (two turns of one conversation finishing together) costs a miss.
    if isinstance(existing, dict) and existing.get("at", 0) > at:
        return False
    record = {"from_intent": from_intent, "predicted": predicted, "product_ids": product_ids, "at": at, "keys": keys}
    _cache_set_many({key: record}, PREDICTION_TTL)
    return True


def prediction_record_clear(*, conversation_id: str) -> None:
    try:
        cache.delete(prediction_key(conversation_id))
    except Exception:  # noqa: BLE001
        logger.warning("prefetch: could not clear the prediction of %s", conversation_id, exc_info=True)


# --- Warming ----------------------------------------------------------------------------------


@dataclass
class PrefetchResult:
    intent: str
    transitions: list[str] = field(default_factory=list)  # to-intents prefetched for, most likely first
    product_ids: list[int] = field(default_factory=list)
    warmed: list[str] = field(default_factory=list)  # cache keys filled
    skipped: list[str] = field(default_factory=list)  # cache keys found warm already
    not_reached: list[str] = field(default_factory=list)  # cache keys left when the deadline came
    deadline_reached: bool = False
    seconds: float = 0.0

    @property
    def covered(self) -> list[str]:
        """Keys the next turn can count on: warmed now or found warm."""
        return self.warmed + self.skipped

    def summary(self) -> dict[str, Any]:
        return {"intent": self.intent, "transitions": self.transitions, "warmed": len(self.warmed),
                "skipped": len(self.skipped), "not_reached": len(self.not_reached),
                "deadline_reached": self.deadline_reached, "seconds": round(self.seconds, 4)}


def similar_products(index: LexicalIndex, product_id: int, *, limit: int) -> list[int]:
    """What "something like this one" presents: same demographic first, then any genre match.

    Mirrors ContextAssembler._products_for for a message without filter words, so the details a
    prefetch warms are the ones the recommendation will show.
    """
    seed = index.get(product_id)
    similar = index.similar(product_id, limit=limit, filters=Filters(demographic=seed.demographic if seed else ""))
    if len(similar) < limit:
        shown = frozenset(s.product_id for s in similar)
        more = index.similar(product_id, limit=limit, filters=Filters(exclude_ids=shown))
        similar += more[: limit - len(similar)]
    return [s.product_id for s in similar]


class _Warmer:
    """One prefetch run: warms kind by kind, most likely transition first, until the deadline."""

    def __init__(self, *, result: PrefetchResult, known: dict[str, Any], deadline: float, limit: int,
                 session_key: str) -> None:
        self.result = result
        self.known = known  # what the first cache read found
        self.deadline = deadline
        self.limit = limit
        self.session_key = session_key
        self.seen: set[str] = set()  # keys already counted (similar lists overlap)

    def time_left(self) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.result.deadline_reached = True
        return False

    def _count(self, kind: str, key: str, outcome: str) -> None:
        if key in self.seen:
            return
        self.seen.add(key)
        getattr(self.result, outcome).append(key)
        metrics.PREFETCH_KEYS.labels(kind, outcome).inc()

    def _left(self, kind: str, keys: Iterable[str]) -> None:
        for key in keys:
            self._count(kind, key, "not_reached")

    def warm(self, kind: str, product_ids: list[int]) -> None:
        keys = kind_keys(kind, product_ids=product_ids, session_key=self.session_key)
        if not keys:
            return
        if not self.time_left():
            self._left(kind, keys)
            return
        getattr(self, f"_warm_{kind}")(kind, product_ids)

    def _facts(self, kind: str, product_ids: list[int], known: dict[str, Any] | None = None) -> None:
        """Product details for `product_ids`: the ones not cached yet, in one query."""
        keys = {chat_assembly.facts_key(pid): pid for pid in product_ids}
        if known is None:
            known = cache_get_many([key for key in keys if key not in self.seen])
        missing = []
        for key, pid in keys.items():
            if key in known:
                self._count(kind, key, "skipped")
            elif key not in self.seen:
                missing.append(pid)
        if missing:
            found, _ = chat_assembly.load_product_facts(missing)
            for facts in found:  # unknown ids are not cached, so not counted
                self._count(kind, chat_assembly.facts_key(facts.id), "warmed")

    def _warm_details(self, kind: str, product_ids: list[int]) -> None:
        self._facts(kind, product_ids, self.known)

    def _warm_reviews(self, kind: str, product_ids: list[int]) -> None:
        missing = []
        for pid in product_ids:
            key = chat_assembly.reviews_key(pid)
            if key in self.known:
                self._count(kind, key, "skipped")
            else:
                missing.append(pid)
        if missing:
            chat_assembly.load_reviews(missing)  # caches "no reviews" too
            for pid in missing:
                self._count(kind, chat_assembly.reviews_key(pid), "warmed")

    def _warm_similar(self, kind: str, product_ids: list[int]) -> None:
        for n, pid in enumerate(product_ids):
            if not self.time_left():
                self._left(kind, [similar_key(p) for p in product_ids[n:]])
                return
            key = similar_key(pid)
            similar_ids = self.known.get(key)
            if isinstance(similar_ids, list):
                self._count(kind, key, "skipped")
            else:
                similar_ids = similar_products(get_index(), pid, limit=self.limit)
                _cache_set_many({key: similar_ids}, SIMILAR_TTL)
                self._count(kind, key, "warmed")
            self._facts(kind, similar_ids)

    def _warm_trending(self, kind: str, product_ids: list[int]) -> None:
        trending_ids = self.known.get(TRENDING_KEY)
        if isinstance(trending_ids, list):
            self._count(kind, TRENDING_KEY, "skipped")
        else:
            top = heapq.nlargest(self.limit, get_index().items, key=lambda item: (item.popularity, -item.product_id))
            trending_ids = [item.product_id for item in top]
            _cache_set_many({TRENDING_KEY: trending_ids}, TRENDING_TTL)
            self._count(kind, TRENDING_KEY, "warmed")
        if self.time_left():
            self._facts(kind, trending_ids)

    def _warm_cart(self, kind: str, product_ids: list[int]) -> None:
        from store.selectors import cart_facts

        key = cart_key(self.session_key)
        if key in self.known:
            self._count(kind, key, "skipped")
            return
        _cache_set_many({key: cart_facts(session_key=self.session_key)}, CART_TTL)
        self._count(kind, key, "warmed")

    def _warm_promotions(self, kind: str, product_ids: list[int]) -> None:
        if chat_assembly.PROMOTIONS_KEY in self.known:
            self._count(kind, chat_assembly.PROMOTIONS_KEY, "skipped")
            return
        chat_assembly.load_promotions()
        self._count(kind, chat_assembly.PROMOTIONS_KEY, "warmed")


def session_store_data_warm(*, session_key: str) -> None:
    """A chat socket opened: the session's latest orders and its cart into the cache, unless they are
    there, for its first order or checkout question, which would otherwise read them while the
    customer waits (the copies are dropped on any change, store.signals and prefetch.signals)."""
    chat_assembly.load_session_orders(session_key)
    cart_summary(session_key=session_key)


def prefetch_for_turn(*, intent: str, product_ids: list[int], session_key: str, conversation_id: str,
                      predicted_at: float | None = None) -> PrefetchResult:
    """Warm what the likely next turns need, for the products the answer to an `intent` turn showed.

    Every enabled transition from `intent` at or above the threshold contributes its keys, for
    at most N products each; keys already cached are skipped (one cache read first), so running
    it twice warms nothing the second time. It stops when the deadline is up (checked between
    kinds and between products; one database query is never interrupted). Then it records the
    prediction and the keys it covered for the next turn's hit accounting.
    """
    started = time.monotonic()
    config = prefetch_config()
    rules = config.predicted(intent)
    ids = _distinct_ids(product_ids)[: config.max_products_per_key]
    result = PrefetchResult(intent=intent, transitions=[rule.to_intent for rule in rules], product_ids=ids)
    kinds = list(dict.fromkeys(key for rule in rules for key in rule.keys))
    if kinds:
        first_keys = [key for kind in kinds for key in kind_keys(kind, product_ids=ids, session_key=session_key)]
        warmer = _Warmer(result=result, known=cache_get_many(first_keys), deadline=started + config.deadline_seconds,
                         limit=config.max_products_per_key, session_key=session_key)
        for kind in kinds:
            warmer.warm(kind, ids)
    result.seconds = time.monotonic() - started
    metrics.PREFETCH_SECONDS.observe(result.seconds)
    if conversation_id and rules:
        prediction_record_save(conversation_id=str(conversation_id), from_intent=intent,
                               predicted={rule.to_intent: list(rule.keys) for rule in rules}, product_ids=ids,
                               at=predicted_at if predicted_at is not None else time.time(), keys=result.covered)
    return result


def prefetch_enqueue(*, context: AssembledContext, presented_ids: list[int], session_key: str) -> bool:
    """After an answer is saved: queue the prefetch for the turn likely to follow. Never raises.

    Returns True when a prefetch was asked for (queued once the transaction commits), False when
    nothing is likely enough. A broker that is down turns the queueing into a counted skip in
    mangaassist.celery.enqueue; the prediction stays recorded, so the next turn counts a miss.
    """
    try:
        from mangaassist.celery import enqueue_on_commit

        from .tasks import prefetch_task

        conversation_id = str(context.conversation_id) if context.conversation_id else ""
        if not conversation_id:
            return False
        config = prefetch_config()
        rules = config.predicted(context.intent)
        if not any(rule.keys for rule in rules):
            # Nothing to expect: the next turn must not be judged against an older prediction.
            prediction_record_clear(conversation_id=conversation_id)
            return False
        ids = _distinct_ids(presented_ids or [p.id for p in context.products])[: config.max_products_per_key]
        at = time.time()
        prediction_record_save(conversation_id=conversation_id, from_intent=context.intent,
                               predicted={rule.to_intent: list(rule.keys) for rule in rules}, product_ids=ids,
                               at=at, keys=[])
        enqueue_on_commit(prefetch_task, args=(context.intent, ids, session_key, conversation_id),
                          kwargs={"predicted_at": at}, expires=config.deadline_seconds + QUEUE_WAIT_SECONDS)
        if ids and config.speculated(context.intent) is not None:
            from . import speculation
            from .tasks import speculate_task

            enqueue_on_commit(speculate_task, kwargs={
                "conversation_id": conversation_id, "session_key": session_key, "page": dict(context.page or {}),
                "from_intent": context.intent, "product_id": ids[0], "predicted_at": at},
                expires=speculation.QUEUE_WAIT_SECONDS)
        return True
    except Exception:  # noqa: BLE001 - speculation must never cost the customer their answer
        logger.exception("prefetch: could not queue the prefetch after %s", getattr(context, "intent", "?"))
        return False


# --- Hit accounting ----------------------------------------------------------------------------


def prefetch_outcome_record(*, conversation_id: str | uuid.UUID, lookup: PrefetchLookup | None,
                            client_message_id: str = "") -> PrefetchOutcome | None:
    """Count the turn's lookup (Prometheus) and store it, so PMs see the hit rate by transition.

    First turns (no previous intent, no prediction) are not stored.
    """
    if lookup is None:
        return None
    if lookup.hit is not None:
        chat_metrics.PREFETCH_LOOKUPS.labels("hit" if lookup.hit else "miss", lookup.transition).inc()
    if not lookup.from_intent or not conversation_id:
        return None
    return PrefetchOutcome.objects.create(
        conversation_id=conversation_id, client_message_id=client_message_id[:64], from_intent=lookup.from_intent,
        to_intent=lookup.to_intent, predicted=lookup.predicted, hit=lookup.hit, keys=dict(lookup.keys))


# --- Starting values and relearning ------------------------------------------------------------


def transitions_starting_values_install() -> int:
    """DESIGN.md §8 transitions and settings, where missing (what migration 0002 does). Idempotent."""
    created = 0
    for from_intent, to_intent, probability, keys in STARTING_TRANSITIONS:
        _, was_created = Transition.objects.get_or_create(
            from_intent=from_intent, to_intent=to_intent,
            defaults={"probability": probability, "prefetch_keys": list(keys), "enabled": True})
        created += was_created
    if not PrefetchSettings.objects.exists():
        PrefetchSettings().save()
    return created


RELEARN_MIN_INTERVAL = timedelta(hours=12)


@dataclass
class RelearnResult:
    window_start: datetime
    window_end: datetime
    proposals: list[TransitionProposal] = field(default_factory=list)
    too_few: dict[str, int] = field(default_factory=dict)  # from-intent -> follow-ups seen (under min_samples)
    applied: bool = False
    ran_recently: bool = False

    def summary(self) -> dict[str, Any]:
        return {"proposals": len(self.proposals), "too_few": self.too_few, "applied": self.applied,
                "ran_recently": self.ran_recently}


def _floor4(value: float) -> float:
    # Down, never up: rounded proposals of one intent never add up to more than the exact ones (<= 1).
    return math.floor(value * 10_000 + 1e-7) / 10_000


def transitions_relearn(*, now: datetime | None = None, min_samples: int | None = None,
                        smoothing: float | None = None, window_days: int | None = None, actor: str = "relearn",
                        force: bool = False) -> RelearnResult:
    """Propose probabilities from the follow-ups observed in chat.TurnRecord (previous_intent -> intent).

    For a from-intent with n >= min_samples follow-ups, count c of them to a to-intent and current
    probability p: (c + k * p) / (n + k), k = `smoothing` (k = 0: the observed share). Every
    to-intent observed or already configured gets a proposal, so an intent's proposals add up to
    at most 1 when its current ones do. Older pending proposals are superseded; with
    PrefetchSettings.auto_apply_relearned the new ones are applied at once. None: the value in
    PrefetchSettings (30 samples, k = 20, 28 days). A second run within 12 hours does nothing
    (a redelivered task must not apply the same evidence twice) unless `force`.
    """
    now = now or timezone.now()
    config = prefetch_settings()
    min_samples = config.relearn_min_samples if min_samples is None else min_samples
    smoothing = config.relearn_smoothing if smoothing is None else smoothing
    window_days = config.relearn_window_days if window_days is None else window_days
    result = RelearnResult(window_start=now - timedelta(days=window_days), window_end=now)
    recent = TransitionProposal.objects.filter(window_end__gt=now - RELEARN_MIN_INTERVAL, window_end__lte=now)
    if not force and recent.exists():
        result.ran_recently = True
        return result

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    pairs = (TurnRecord.objects.filter(created_at__gte=result.window_start, created_at__lte=now,
                                       previous_intent__in=INTENTS, intent__in=INTENTS)
             .values_list("previous_intent", "intent"))
    for previous_intent, intent in pairs.iterator(chunk_size=5000):
        counts[previous_intent][intent] += 1
    current: dict[str, dict[str, float]] = defaultdict(dict)
    for t in Transition.objects.all():
        current[t.from_intent][t.to_intent] = t.probability

    with transaction.atomic():
        for from_intent in sorted(counts):
            observed = counts[from_intent]
            n = sum(observed.values())
            if n < min_samples:
                result.too_few[from_intent] = n
                continue
            TransitionProposal.objects.filter(status=ProposalStatus.PENDING, from_intent=from_intent).update(
                status=ProposalStatus.SUPERSEDED)
            for to_intent in sorted(set(observed) | set(current[from_intent])):
                prior = current[from_intent].get(to_intent)
                proposed = _floor4((observed[to_intent] + smoothing * (prior or 0.0)) / (n + smoothing))
                result.proposals.append(TransitionProposal(
                    from_intent=from_intent, to_intent=to_intent, current_probability=prior,
                    proposed_probability=proposed, observed=observed[to_intent], samples=n,
                    window_start=result.window_start, window_end=now))
        TransitionProposal.objects.bulk_create(result.proposals)
        if result.proposals and config.auto_apply_relearned:
            check_transition_proposals_apply(proposals=result.proposals, actor=f"auto:{actor}")
            result.applied = True
    logger.info("prefetch: relearned %d transitions (%s); too few samples: %s", len(result.proposals),
                "applied" if result.applied else "proposed", result.too_few or "none")
    return result


def check_transition_proposals_apply(*, proposals: Iterable[TransitionProposal], actor: str) -> list[Transition]:
    """Validate that the proposals are pending and keep each from-intent at or under 1; then apply them."""
    proposals = list(proposals)
    stale = [p for p in proposals if p.status != ProposalStatus.PENDING]
    if stale:
        raise ValidationError(f"{len(stale)} of the selected proposals are no longer pending "
                              f"({', '.join(sorted({str(p) for p in stale})[:3])}).")
    chosen: dict[tuple[str, str], TransitionProposal] = {}
    for proposal in proposals:
        if chosen.setdefault((proposal.from_intent, proposal.to_intent), proposal) is not proposal:
            raise ValidationError(f"Two proposals for {proposal.from_intent} -> {proposal.to_intent}; choose one.")
    totals: dict[str, float] = defaultdict(float)
    from_intents = {p.from_intent for p in proposals}
    for t in Transition.objects.filter(from_intent__in=from_intents):
        proposal = chosen.get((t.from_intent, t.to_intent))
        totals[t.from_intent] += proposal.proposed_probability if proposal else t.probability
    for (from_intent, to_intent), proposal in chosen.items():
        if not Transition.objects.filter(from_intent=from_intent, to_intent=to_intent).exists():
            totals[from_intent] += proposal.proposed_probability
    over = {intent: total for intent, total in totals.items() if total > 1 + PROBABILITY_EPSILON}
    if over:
        raise ValidationError("; ".join(f"the transitions from {intent} would add up to {total:.2f} (at most 1.00): "
                                        f"apply the other proposals of {intent} with these"
                                        for intent, total in sorted(over.items())))
    return transition_proposals_apply(proposals=proposals, actor=actor)


def transition_proposals_apply(*, proposals: list[TransitionProposal], actor: str,
                               now: datetime | None = None) -> list[Transition]:
    """Set the proposed probabilities (new transitions start with nothing to prefetch)."""
    now = now or timezone.now()
    applied = []
    with transaction.atomic():
        for proposal in proposals:
            row, _ = Transition.objects.update_or_create(
                from_intent=proposal.from_intent, to_intent=proposal.to_intent,
                defaults={"probability": proposal.proposed_probability},
                create_defaults={"probability": proposal.proposed_probability, "prefetch_keys": [], "enabled": True})
            applied.append(row)
            proposal.status, proposal.applied_at, proposal.applied_by = ProposalStatus.APPLIED, now, actor[:150]
            proposal.save(update_fields=["status", "applied_at", "applied_by"])
    return applied
