"""Reads of the prefetch app: the live configuration, the cache keys it warms, the hit accounting.

The configuration is read through the shared cache so a PM's edit reaches the next turn in
every process: saving or deleting a Transition or the settings deletes the cached copy once
the transaction commits (prefetch.signals).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from django.core.cache import cache
from django.db.models import Count, Q

# A module reference, not names: chat.assembly imports this module for the lookup.
from chat import assembly as chat_assembly
from mangaassist.cached_config import cached_config, cached_config_invalidate

from .models import PrefetchKey, PrefetchOutcome, PrefetchSettings, Transition

logger = logging.getLogger(__name__)

CONFIG_KEY = "prefetch:config:v2"  # v2: with the speculation settings
# A safety net only: edits invalidate the copy at once. The TTL bounds the one race left (a
# process that read the database just before a commit and writes its copy just after it).
CONFIG_TTL = 5 * 60

SIMILAR_TTL = 15 * 60  # DESIGN.md §8: recommendations 15 min
TRENDING_TTL = 15 * 60
CART_TTL = 5 * 60
PREDICTION_TTL = 15 * 60
TRENDING_KEY = "product:trending"

# What each intent's context needs that a prefetch can have ready (chat.assembly reads these).
NEEDED_KINDS: dict[str, tuple[str, ...]] = {
    "product_question": ("details", "reviews"),
    "recommendation": ("similar",),
    "checkout_help": ("cart",),
    "promotion": ("promotions",),
    "product_discovery": ("trending",),
}


def similar_key(product_id: int) -> str:
    """The ids of the series like `product_id` (catalog.retrieval's index.similar)."""
    return f"product:similar:{product_id}"


def cart_key(session_key: str) -> str:
    """The cart summary of one browser session (store.selectors.cart_facts)."""
    return f"store:cart:{session_key}"


def prediction_key(conversation_id: str | uuid.UUID) -> str:
    """What the previous answer's prefetch expected next, for the next turn's hit accounting."""
    return f"prefetch:prediction:{conversation_id}"


def speculation_key(conversation_id: str | uuid.UUID) -> str:
    """The answer prepared for the predicted follow-up (prefetch.speculation)."""
    return f"prefetch:speculation:{conversation_id}"


@dataclass(frozen=True)
class PreparedAnswer:
    """The answer to the predicted follow-up, generated before it was asked (prefetch.speculation)."""

    at: float  # the prediction record it was prepared for: a newer turn makes it stale
    from_intent: str
    to_intent: str
    product_id: int
    fingerprint: str  # the product's title, price and stock when prepared: a change discards it
    text: str
    prompt_tokens: int
    output_tokens: int
    model_id: str
    seconds: float  # how long preparing it took


def kind_keys(kind: str, *, product_ids: list[int], session_key: str) -> list[str]:
    """The cache keys one kind of prefetch fills for these products (the lookup checks the same)."""
    if kind == "details":
        return [chat_assembly.facts_key(pid) for pid in product_ids]
    if kind == "reviews":
        return [chat_assembly.reviews_key(pid) for pid in product_ids]
    if kind == "similar":
        return [similar_key(pid) for pid in product_ids]
    if kind == "trending":
        return [TRENDING_KEY]
    if kind == "cart":
        return [cart_key(session_key)] if session_key else []
    if kind == "promotions":
        return [chat_assembly.PROMOTIONS_KEY]
    raise ValueError(f"unknown prefetch key {kind!r}")


def cache_get_many(keys: list[str]) -> dict[str, Any]:
    try:
        return cache.get_many(keys) if keys else {}
    except Exception:  # noqa: BLE001 - the cache is an accelerator: down means miss
        logger.warning("prefetch: cache read failed", exc_info=True)
        return {}


# --- The live configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class TransitionRule:
    to_intent: str
    probability: float
    keys: tuple[str, ...]


# The follow-ups speculation can prepare: phrased as the customer most often asks them, so the
# prepared context is the one the real follow-up assembles (prefetch.speculation).
SPECULABLE_INTENTS = ("product_question",)


@dataclass(frozen=True)
class SpeculationConfig:
    enabled: bool = True
    threshold: float = 0.45
    pregenerate: bool = True
    max_output_tokens: int = 320
    conversation_budget: int = 6000
    daily_budget: int = 2_000_000


@dataclass(frozen=True)
class PrefetchConfig:
    enabled: bool = True
    threshold: float = 0.25
    deadline_seconds: float = 2.0
    max_products_per_key: int = 3
    # Enabled transitions by from-intent, most likely first.
    transitions: Mapping[str, tuple[TransitionRule, ...]] = field(default_factory=dict)
    speculation: SpeculationConfig = field(default_factory=SpeculationConfig)

    def predicted(self, intent: str) -> tuple[TransitionRule, ...]:
        """The transitions from `intent` likely enough to prefetch for."""
        if not self.enabled:
            return ()
        return tuple(rule for rule in self.transitions.get(intent, ()) if rule.probability >= self.threshold - 1e-9)

    def speculated(self, intent: str) -> TransitionRule | None:
        """The single most likely follow-up of `intent`, when it is likely enough to prepare and preparable."""
        spec = self.speculation
        if not self.enabled or not spec.enabled or not (spec.conversation_budget and spec.daily_budget):
            return None
        rules = self.transitions.get(intent, ())
        top = rules[0] if rules else None
        if top is None or top.probability < spec.threshold - 1e-9 or top.to_intent not in SPECULABLE_INTENTS:
            return None
        return top


def _config_load() -> PrefetchConfig:
    row = prefetch_settings()
    transitions: dict[str, list[TransitionRule]] = {}
    for t in Transition.objects.filter(enabled=True).order_by("from_intent", "-probability", "to_intent"):
        # A key written past the admin's validation is ignored rather than failing every prefetch.
        keys = tuple(key for key in (t.prefetch_keys or ()) if key in PrefetchKey.values)
        transitions.setdefault(t.from_intent, []).append(TransitionRule(t.to_intent, float(t.probability), keys))
    speculation = SpeculationConfig(
        enabled=row.speculation_enabled, threshold=row.speculation_threshold, pregenerate=row.pregenerate,
        max_output_tokens=row.speculative_max_output_tokens,
        conversation_budget=row.speculative_conversation_token_budget, daily_budget=row.speculative_daily_token_budget)
    return PrefetchConfig(enabled=row.enabled, threshold=row.threshold, deadline_seconds=row.deadline_seconds,
                          max_products_per_key=row.max_products_per_key,
                          transitions={k: tuple(v) for k, v in transitions.items()}, speculation=speculation)


def prefetch_config() -> PrefetchConfig:
    """The configuration as the PMs left it: one cache read, the database only after a change."""
    return cached_config(CONFIG_KEY, _config_load, PrefetchConfig, timeout=CONFIG_TTL)


def prefetch_config_invalidate() -> None:
    cached_config_invalidate(CONFIG_KEY)


def prefetch_settings() -> PrefetchSettings:
    return PrefetchSettings.objects.filter(pk=PrefetchSettings.SINGLETON_PK).first() or PrefetchSettings()


# --- The cart, cache first --------------------------------------------------------------------


def cart_summary(*, session_key: str) -> str:
    """The session's cart line for the prompt: from the cache a prefetch filled, else the database."""
    from store.selectors import cart_facts

    key = cart_key(session_key)
    cached = cache_get_many([key])
    if key in cached:
        return cached[key]
    summary = cart_facts(session_key=session_key)
    try:
        cache.set(key, summary, CART_TTL)
    except Exception:  # noqa: BLE001
        pass
    return summary


# --- Hit accounting ----------------------------------------------------------------------------

HIT, WARM, MISS = "hit", "warm", "miss"


@dataclass(frozen=True)
class PrefetchLookup:
    """Did this turn find ready what the previous answer's prefetch warmed for it?"""

    from_intent: str
    to_intent: str
    predicted: bool  # to_intent was among the transitions prefetched for
    hit: bool | None  # None: no prediction, or nothing this intent needs can be prefetched
    keys: dict[str, str] = field(default_factory=dict)  # kind -> hit | warm (not by the prefetch) | miss
    prepared: PreparedAnswer | None = None  # the answer speculation prepared for the predicted follow-up

    @property
    def transition(self) -> str:
        return f"{self.from_intent or 'none'}->{self.to_intent}"


def prefetch_lookup(*, conversation_id: str | uuid.UUID, intent: str, product_ids: list[int], session_key: str,
                    previous_intent: str = "") -> PrefetchLookup:
    """One cache read: the prediction record and the keys `intent` needs for `product_ids`.

    A kind is a hit when all its keys are in the cache *and* the prefetch covered them (warmed
    or checked them); keys the previous turn's own assembly left behind count as `warm`, not as
    hits. Call it before the turn's own sources fill the cache.
    """
    needed = {kind: kind_keys(kind, product_ids=list(product_ids), session_key=session_key)
              for kind in NEEDED_KINDS.get(intent, ())}
    record_key, prepared_key = prediction_key(conversation_id), speculation_key(conversation_id)
    found = cache_get_many([record_key, prepared_key, *(key for keys in needed.values() for key in keys)])
    record = found.get(record_key)
    if not isinstance(record, dict) or (previous_intent and record.get("from_intent") != previous_intent):
        # No prediction for the turn before this one (the first turn, nothing likely enough, or stale).
        return PrefetchLookup(from_intent=previous_intent, to_intent=intent, predicted=False, hit=None)
    covered = set(record.get("keys") or ())
    results = {}
    for kind, keys in needed.items():
        if not keys:
            continue
        if not all(key in found for key in keys):
            results[kind] = MISS
        else:
            results[kind] = HIT if all(key in covered for key in keys) else WARM
    prepared = found.get(prepared_key)
    if not isinstance(prepared, PreparedAnswer) or prepared.at != record.get("at"):
        prepared = None  # prepared for an older turn of the conversation
    return PrefetchLookup(
        from_intent=record.get("from_intent", previous_intent), to_intent=intent,
        predicted=intent in (record.get("predicted") or {}),
        hit=all(result == HIT for result in results.values()) if results else None, keys=results, prepared=prepared)


@dataclass(frozen=True)
class TransitionHitRate:
    from_intent: str
    to_intent: str
    turns: int
    predicted: int
    lookups: int  # turns with a prediction and something to find
    hits: int

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None


def prefetch_hit_rates(*, since: datetime, until: datetime | None = None) -> list[TransitionHitRate]:
    """Prefetch outcomes per transition (previous intent -> intent), busiest first."""
    rows = PrefetchOutcome.objects.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    grouped = (rows.values("from_intent", "to_intent")
               .annotate(turns=Count("pk"), predicted_n=Count("pk", filter=Q(predicted=True)),
                         lookups=Count("pk", filter=Q(hit__isnull=False)), hits=Count("pk", filter=Q(hit=True)))
               .order_by("-turns", "from_intent", "to_intent"))
    return [TransitionHitRate(r["from_intent"], r["to_intent"], r["turns"], r["predicted_n"], r["lookups"], r["hits"])
            for r in grouped]
