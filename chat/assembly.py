"""Context assembly: every source gathered concurrently, each under its own deadline.

A slow or failing source never holds the answer back: it is recorded as degraded
(timeout or error) in the turn's metrics and the answer is written without it.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Generator, TypeVar

from django.conf import settings
from django.core.cache import cache

from catalog import selectors as catalog_selectors
from catalog.retrieval import Filters, LexicalIndex, ScoredProduct, get_index, uses_postgres
from catalog.retrieval import search as retrieval_search
from catalog.selectors import ProductFacts, PromotionFacts, ReviewFacts
from catalog.text import tokens
from prefetch.selectors import PrefetchLookup, cart_key, cart_summary, prefetch_lookup

from . import selectors
from .compression import Chunk
from .entities import Entities, refers_to_earlier_turns, resolve
from .intents import IntentResult, classify
from .prompt_config import CONFIG_KEY, PromptConfig, prompt_config
from .selectors import Memory
from .threads import cache_is_local, pool_call_ended, run_assembly, submit_db

if TYPE_CHECKING:
    from store.selectors import OrderRecord

logger = logging.getLogger(__name__)
T = TypeVar("T")

PRODUCT_FACTS_TTL = 5 * 60
REVIEWS_TTL = 60 * 60
PROMOTIONS_TTL = 15 * 60
MAX_PRODUCTS = 3
MAX_CANDIDATES = 8

_DEMOGRAPHIC_WORDS = {"shonen": "shonen", "shounen": "shonen", "seinen": "seinen", "shojo": "shojo", "shoujo": "shojo",
                      "josei": "josei", "kids": "children", "children": "children", "少年": "shonen", "青年": "seinen",
                      "少女": "shojo", "女性": "josei"}
_GENRE_WORDS = {"action", "adventure", "comedy", "drama", "fantasy", "mystery", "horror", "romance", "sports",
                "supernatural", "historical", "thriller", "cooking", "music", "psychological", "crime", "war", "medical",
                "mecha", "school", "business"}
_STATUS_WORDS = {"completed": "completed", "finished": "completed", "ongoing": "ongoing", "完結": "completed",
                 "連載中": "ongoing"}


@dataclass
class TurnInput:
    conversation_id: uuid.UUID
    client_message_id: str
    text: str
    page: dict
    session_key: str = ""  # whose orders and cart the store data may show
    continuing: bool = False  # answered before and cut short: continue that answer (`resume`)
    new_conversation: bool = False  # the conversation starts with this message: it has no memory to read


@dataclass
class AssembledContext:
    """Everything the prompt (and the simulated responder) is written from."""

    intent: str
    confidence: float
    message: str
    memory: Memory
    entities: Entities
    products: list[ProductFacts] = field(default_factory=list)  # what the answer should present, in order
    focus: ProductFacts | None = None
    seed: ProductFacts | None = None  # "like Dragon Ball": the series the customer compares with
    reviews: dict[int, ReviewFacts] = field(default_factory=dict)
    promotions: list[PromotionFacts] = field(default_factory=list)
    filters: dict = field(default_factory=dict)
    store: dict = field(default_factory=dict)
    page: dict = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    prefetch_hit: bool | None = None
    assembly_ms: float = 0.0
    others: list[ProductFacts] = field(default_factory=list)  # retrieved but not presented
    conversation_id: uuid.UUID | None = None
    named_skus: list[str] = field(default_factory=list)  # what the message named or pointed at
    config: PromptConfig = field(default_factory=PromptConfig)
    prefetch: PrefetchLookup | None = None  # what the previous answer's prefetch had ready for this turn

    def chunks(self) -> list[Chunk]:
        """The store data as scored chunks for the compressor."""
        out: list[Chunk] = []
        for rank, product in enumerate(self.products):
            out.append(Chunk(product_chunk(product, self.reviews.get(product.id)), score=1.0 - rank * 0.1))
        if self.seed and self.seed not in self.products:
            out.append(Chunk(product_chunk(self.seed, None), score=0.5))
        for rank, product in enumerate(self.others):
            out.append(Chunk(product_chunk(product, None), score=0.3 - rank * 0.01))
        for promotion in self.promotions:
            out.append(Chunk(f"Promotion {promotion.code}: {promotion.title}, {promotion.discount_percent}% off. "
                             f"{promotion.description}", score=0.4, source="promotion"))
        for value in self.store.values():
            out.append(Chunk(value, score=1.5, source="store"))  # orders, cart, policy: the answer itself
        return out


def product_chunk(product: ProductFacts, review: ReviewFacts | None) -> str:
    parts = [f"[{product.sku}] {product.title}"]
    if product.title_ja and product.title_ja != product.title:
        parts.append(f"({product.title_ja})")
    parts.append(f"by {', '.join(product.authors) or 'unknown'}; {product.publisher or 'publisher unknown'};")
    details = [d for d in (product.demographic, "/".join(product.genres)) if d]
    if details:
        parts.append("; ".join(details) + ";")
    if product.volumes:
        parts.append(f"{product.volumes} vols, {product.status or 'status unknown'};")
    parts.append(f"¥{product.price_yen}/vol, {'in stock' if product.in_stock else 'out of stock'}.")
    if product.description:
        parts.append(product.description)
    if review:
        parts.append(f"Reviews ({review.average_rating:.1f}/5, {review.review_count}): {review.summary}")
    return " ".join(parts)


_MISS = object()


@dataclass
class _Source:
    """One context source: a blocking call, its deadline and what the answer uses without it.

    `in_place`: the source served from this process's own memory (the local-memory cache, the
    in-process index), tried on the assembly's thread when the cache is local: a hop to a pool
    thread costs more than such a read under load. It returns the value, or `_MISS` for `call`."""

    name: str
    deadline: float
    call: Callable[[], Any]
    default: Any
    in_place: Callable[[], Any] | None = None


def _timed(call: Callable[[], T], since: float) -> tuple[T, float]:
    """Run on a pool thread: the source's result, and when it was ready (ms since the gather began)."""
    value = call()
    return value, round((time.perf_counter() - since) * 1000, 3)


def _start(sources: tuple[_Source, ...], started: float, timings: dict[str, float], *,
           in_place: bool) -> tuple[list[Any], dict[int, Future]]:
    """Read what this process's memory holds (when `in_place`) and start the rest on the ORM pool:
    the results so far, and the pool's futures by position."""
    results: list[Any] = [None] * len(sources)
    futures: dict[int, Future] = {}
    for n, source in enumerate(sources):
        value = _MISS
        if in_place and source.in_place is not None:
            try:
                value = source.in_place()
            except Exception:  # noqa: BLE001 - the pool's call, under its deadline, decides
                value = _MISS
        if value is _MISS:
            futures[n] = submit_db(_timed, source.call, started)
        else:
            results[n], timings[source.name] = value, round((time.perf_counter() - started) * 1000, 3)
    return results, futures


def _finished(future: Future, timeout: float) -> bool:
    """On a thread: whether the pool's call ended within `timeout` seconds."""
    return bool(futures_wait([future], timeout=max(0.0, timeout)).done)


def _settle(source: _Source, future: Future, finished: bool, started: float, degraded: dict[str, str],
            timings: dict[str, float]) -> Any:
    """The source's result, or its default (recorded in `degraded`) when it failed or was too late."""
    if finished:
        try:
            value, timings[source.name] = future.result(timeout=0)
            return value
        except Exception as exc:  # noqa: BLE001 - a failing source degrades the answer, never stops it
            logger.warning("context source %s failed: %s", source.name, exc)
            degraded[source.name] = "error"
    else:
        future.cancel()  # not started yet: never runs; running: its late result is dropped
        degraded[source.name] = "timeout"
    timings[source.name] = round((time.perf_counter() - started) * 1000, 3)
    return source.default


def _cache_get_many(keys: list[str]) -> dict[str, Any]:
    try:
        return cache.get_many(keys)
    except Exception:  # noqa: BLE001 - the cache is an accelerator: down means miss
        return {}


def _cached(key: str, kind: type | None = None) -> Any:
    """The cached value at `key` (of `kind`, when given), else `_MISS`."""
    found = _cache_get_many([key])
    if key not in found or (kind is not None and not isinstance(found[key], kind)):
        return _MISS
    return found[key]


def _cache_set_many(values: dict[str, Any], timeout: int) -> None:
    try:
        cache.set_many(values, timeout)
    except Exception:  # noqa: BLE001
        pass


def facts_key(product_id: int) -> str:
    return f"product:facts:{product_id}"


def reviews_key(product_id: int) -> str:
    return f"product:reviews:{product_id}"


PROMOTIONS_KEY = "store:promotions"


def load_product_facts(product_ids: list[int], *, cache_only: bool = False) -> tuple[list[ProductFacts], int] | object:
    """Facts for `product_ids` in order, cache first; returns them and the number of cache hits.
    `cache_only`: `_MISS` unless the cache holds every one of them."""
    if not product_ids:
        return [], 0
    cached = _cache_get_many([facts_key(pid) for pid in product_ids])
    missing = [pid for pid in product_ids if facts_key(pid) not in cached]
    if missing:
        if cache_only:
            return _MISS
        fresh = catalog_selectors.product_facts(missing)
        _cache_set_many({facts_key(f.id): f for f in fresh}, PRODUCT_FACTS_TTL)
        cached.update({facts_key(f.id): f for f in fresh})
    found = [cached[facts_key(pid)] for pid in product_ids if facts_key(pid) in cached]
    return found, len(product_ids) - len(missing)


def load_reviews(product_ids: list[int], *, cache_only: bool = False) -> dict[int, ReviewFacts] | object:
    """Review summaries by product, cache first (absence cached too). `cache_only`: `_MISS` unless
    the cache knows every one of them."""
    if not product_ids:
        return {}
    cached = _cache_get_many([reviews_key(pid) for pid in product_ids])
    missing = [pid for pid in product_ids if reviews_key(pid) not in cached]
    if missing:
        if cache_only:
            return _MISS
        fresh = {r.product_id: r for r in catalog_selectors.review_facts(missing)}
        # Cache the absence too ("no reviews"), so the next turn does not ask again.
        _cache_set_many({reviews_key(pid): fresh.get(pid) for pid in missing}, REVIEWS_TTL)
        cached.update({reviews_key(pid): fresh.get(pid) for pid in missing})
    return {pid: cached[reviews_key(pid)] for pid in product_ids if cached.get(reviews_key(pid))}


def load_promotions() -> list[PromotionFacts]:
    cached = _cached(PROMOTIONS_KEY)
    if cached is not _MISS:
        return cached
    promotions = catalog_selectors.promotions_active()
    _cache_set_many({PROMOTIONS_KEY: promotions}, PROMOTIONS_TTL)
    return promotions


def load_session_orders(session_key: str) -> tuple[OrderRecord, ...]:
    """The session's latest orders, cache first; read, they are kept for its next order question ("has
    it shipped yet?") until any of them changes (store.signals) or ORDERS_TTL passes."""
    from store import selectors as store_selectors

    key = store_selectors.orders_key(session_key)
    cached = _cached(key, tuple)
    if cached is not _MISS:
        return cached
    orders = store_selectors.session_orders(session_key=session_key)
    _cache_set_many({key: orders}, store_selectors.ORDERS_TTL)
    return orders


def store_cache_warm(*, products: int) -> int:
    """Cache what first turns read most: the facts and review summaries of the `products` best-rated
    products (all of a small catalog), the active promotions and the FAQ. A process that starts warm
    spares its first customers those database reads (5-20 ms each on the ORM pool under load); the
    number of products warmed."""
    from store import selectors as store_selectors

    ids = catalog_selectors.product_ids_best_rated(limit=products)
    for start in range(0, len(ids), 500):
        load_product_facts(ids[start:start + 500])
        load_reviews(ids[start:start + 500])
    load_promotions()
    store_selectors.faq_entries()
    return len(ids)


def filters_from(text: str) -> Filters:
    words = set(tokens(text))
    demographic = next((v for k, v in _DEMOGRAPHIC_WORDS.items() if k in words or (len(k) == 2 and k in text)), "")
    genres = frozenset(w for w in words if w in _GENRE_WORDS)
    if "sci" in words and "fi" in words or "scifi" in words:
        genres |= {"sci-fi"}
    status = next((v for k, v in _STATUS_WORDS.items() if k in words or k in text), "")
    return Filters(genres=genres, demographic=demographic, status=status)


ORDER_INTENTS = {"order_tracking", "return_request"}
STORE_INTENTS = ORDER_INTENTS | {"checkout_help", "faq"}  # intents whose answer is the store data
STORE_DATA_INTENTS = STORE_INTENTS | {"promotion"}  # the only intents `store_facts` reads anything for


def store_facts(intent: str, turn: TurnInput, entities: Entities, memory: Memory, *,
                cache_only: bool = False) -> Any:
    """Orders, cart and policies the intent needs, for this customer's session only.

    `cache_only`: `_MISS` unless the cache holds all of it (the policies, the cart a prefetch or an
    earlier read left, the session's orders an earlier order question read)."""
    from store import selectors as store_selectors

    facts: dict[str, str] = {}
    if intent not in STORE_DATA_INTENTS:
        return facts
    numbers = (entities.order_ids or _orders_mentioned(memory)) if intent in ORDER_INTENTS else []
    cart = policies = orders = None
    if cache_only:
        if intent in ORDER_INTENTS and ((orders := _cached(store_selectors.orders_key(turn.session_key), tuple)) is _MISS
                                        or not store_selectors.orders_cover(orders, numbers)):
            return _MISS
        if intent in {"checkout_help", "promotion"} and (cart := _cached(cart_key(turn.session_key), str)) is _MISS:
            return _MISS
        if intent in {"faq", "checkout_help", "return_request"} and (
                policies := _cached(store_selectors.FAQ_KEY, tuple)) is _MISS:
            return _MISS
    elif intent in ORDER_INTENTS and turn.session_key:
        orders = load_session_orders(turn.session_key)
        if not store_selectors.orders_cover(orders, numbers):
            orders = None  # an older order named: read it from the database
    if intent in ORDER_INTENTS:
        for n, order in enumerate(store_selectors.order_facts(session_key=turn.session_key, numbers=numbers,
                                                               with_returns=intent == "return_request",
                                                               records=orders)):
            facts[f"order{n}"] = order.text
    if intent in {"checkout_help", "promotion"}:
        # A prefetched summary when there is one.
        facts["cart"] = cart if cart is not None else cart_summary(session_key=turn.session_key)
    if intent in {"faq", "return_request", "checkout_help"}:
        for n, policy in enumerate(store_selectors.faq_facts(turn.text, limit=1 if intent != "faq" else 2,
                                                             entries=policies)):
            facts[f"policy{n}"] = policy
    return facts


def _orders_mentioned(memory: Memory) -> list[str]:
    """The order the conversation was about ("has it shipped yet?"), newest mention first."""
    from .entities import order_ids

    from .summary import ORDERS_PREFIX

    for message in reversed(memory.recent):
        found = order_ids(message.text) if message.role == "user" else []  # not the examples our answers give
        if found:
            return found[-1:]
    facts = next((line for line in memory.summary.splitlines() if line.startswith(ORDERS_PREFIX)), "")
    return order_ids(facts)[-1:]


def _search(text: str, filters: Filters) -> list[ScoredProduct]:
    return retrieval_search(text, limit=8, filters=filters)


def _current_product_id(page: dict, index: LexicalIndex) -> int | None:
    sku = page.get("current_asin")
    if not isinstance(sku, str) or not sku:
        return None
    return index.by_sku.get(sku)


Steps = Generator[tuple[_Source, ...], list[Any], AssembledContext]


class _Run:
    """One assembly under way: the sources its steps wait for, and what gathering them recorded."""

    def __init__(self, steps: Callable[[TurnInput, dict[str, str], dict[str, float]], Steps], turn: TurnInput) -> None:
        self.degraded: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._steps = steps(turn, self.degraded, self.timings)
        self.sources = next(self._steps)
        self.context: AssembledContext

    def give(self, results: list[Any]) -> bool:
        """The sources' results to the step waiting for them: False once the context is done."""
        try:
            self.sources = self._steps.send(results)
            return True
        except StopIteration as done:
            self.context = done.value
            return False


class ContextAssembler:
    """Gathers memory, retrieval, store data and the prefetch cache for one turn."""

    def __init__(self, deadlines: dict[str, float] | None = None, *, naive: bool | None = None) -> None:
        self.deadlines = deadlines or settings.ASSEMBLY_DEADLINES
        # The benchmark's naive pipeline: one source after another, the whole history, no prefetch.
        self.naive = settings.NAIVE_PIPELINE if naive is None else naive

    def _gather(self, *sources: _Source, degraded: dict[str, str], timings: dict[str, float]) -> list[Any]:
        """On a thread: each source's result, or its default once its deadline passed or it failed
        (recorded in `degraded`). Concurrently on the ORM pool, but what this process's memory holds
        read in place; the naive pipeline: one after another, all on the pool."""
        if self.naive:
            results = []
            for source in sources:
                started = time.perf_counter()
                future = submit_db(_timed, source.call, started)
                results.append(_settle(source, future, _finished(future, source.deadline), started, degraded, timings))
            return results
        started = time.perf_counter()
        results, futures = _start(sources, started, timings, in_place=cache_is_local())
        for n, future in futures.items():
            finished = _finished(future, started + sources[n].deadline - time.perf_counter())
            results[n] = _settle(sources[n], future, finished, started, degraded, timings)
        return results

    async def _gather_on_loop(self, *sources: _Source, degraded: dict[str, str],
                              timings: dict[str, float]) -> list[Any]:
        """On the event loop: the same, a miss awaited without holding the loop (or a thread)."""
        started = time.perf_counter()
        results, futures = _start(sources, started, timings, in_place=True)
        for n, future in futures.items():
            finished = await pool_call_ended(future, started + sources[n].deadline - time.perf_counter())
            results[n] = _settle(sources[n], future, finished, started, degraded, timings)
        return results

    async def assemble(self, turn: TurnInput) -> AssembledContext:
        """The turn's context.

        Embedded mode (the cache in this process's memory): on the event loop. Every source but the
        database is a read of local memory, so what is left is CPU work (entities, intent, retrieval),
        done there in one go: on a thread it shared the GIL with the loop relaying other answers and
        took twice its time under load (100 conversations: 4.5 -> 2.1 ms p50). A source that must
        read the database still goes to the ORM pool, awaited under its deadline.

        Scaled mode (each cache read and query a network round trip), and the naive pipeline: one hop
        off the loop, a thread fanning the sources out and waiting for each, so the loop is not woken
        (and waited for) between the stages."""
        started = time.perf_counter()
        if self.naive or not cache_is_local():
            context = await run_assembly(self._assemble, turn)
        else:
            run = _Run(self._steps, turn)
            while run.give(await self._gather_on_loop(*run.sources, degraded=run.degraded, timings=run.timings)):
                pass
            context = run.context
        context.assembly_ms = round((time.perf_counter() - started) * 1000, 3)
        return context

    def _assemble(self, turn: TurnInput) -> AssembledContext:
        """On a thread: the steps, each gathered there."""
        run = _Run(self._steps, turn)
        while run.give(self._gather(*run.sources, degraded=run.degraded, timings=run.timings)):
            pass
        return run.context

    def _steps(self, turn: TurnInput, degraded: dict[str, str], timings: dict[str, float]) -> Steps:
        """The assembly, written once for both places it runs: it yields the sources it needs next
        (gathered concurrently, each under its deadline, by whoever drives it) and is sent their
        results; it returns the context."""
        filters = filters_from(turn.text)

        # Without memory, "the second one" cannot be answered right: such a message waits longer for it.
        memory_deadline = self.deadlines["memory"]
        if refers_to_earlier_turns(turn.text):
            memory_deadline = max(memory_deadline, self.deadlines.get("memory_reference", 0.5))
        memory_in_place: Callable[[], Any] | None = None
        if turn.new_conversation:
            memory_call: Callable[[], Memory] = Memory
            memory_in_place = Memory
        elif turn.continuing:  # the snapshot holds the cut answer itself: read the history without it
            memory_call = partial(selectors.conversation_memory, conversation_id=turn.conversation_id,
                                  answering=turn.client_message_id)
        elif self.naive:  # every turn verbatim, from the database
            memory_call = partial(selectors.conversation_memory, conversation_id=turn.conversation_id,
                                  full_history=True, answering=turn.client_message_id)
        else:
            memory_call = partial(selectors.conversation_memory_cached, conversation_id=turn.conversation_id,
                                  answering=turn.client_message_id)
            memory_in_place = partial(_cached, selectors.memory_key(turn.conversation_id), Memory)
        search = partial(_search, turn.text, filters)
        memory, retrieved, config = yield (
            _Source("memory", memory_deadline, memory_call, Memory(), memory_in_place),
            _Source("retrieval", self.deadlines["retrieval"], search, [], None if uses_postgres() else search),
            _Source("config", self.deadlines["store"], prompt_config, PromptConfig(),
                    partial(_cached, CONFIG_KEY, PromptConfig)))
        # Entities, intent and the products to present: CPU work (milliseconds), here on this thread.
        index, entities, intent, product_ids, seed_id = self._understand(
            turn, memory, retrieved if "retrieval" not in degraded else None, filters)
        # Before any source below fills the cache: did the previous answer's prefetch have this turn ready?
        lookup_call = partial(prefetch_lookup, conversation_id=turn.conversation_id, intent=intent.intent,
                              product_ids=[seed_id] if seed_id else product_ids, session_key=turn.session_key,
                              previous_intent=memory.previous_intent)  # cache reads only
        lookup = None if self.naive else (
            yield (_Source("prefetch", self.deadlines["prefetch"], lookup_call, None, lookup_call),))[0]
        promotions_first: list[PromotionFacts] | None = None
        if intent.intent == "promotion" and not entities.focus_ids:
            # "What's on sale?": present series the running promotions name.
            promotions_first = (yield (_Source("promotions", self.deadlines["store"], load_promotions, [],
                                               partial(_cached, PROMOTIONS_KEY)),))[0]
            named = [pid for p in promotions_first for pid in p.product_ids]
            if named:
                product_ids = named[:MAX_PRODUCTS]

        wanted = product_ids + ([seed_id] if seed_id and seed_id not in product_ids else [])
        # Further retrieved series: context the compressor keeps while the budget allows.
        others = [r.product_id for r in retrieved if r.product_id not in wanted][: MAX_CANDIDATES - len(wanted)]
        essential = self.deadlines.get("essential", self.deadlines["store"])
        reviewed = product_ids[:1] if intent.intent == "product_question" else []
        sources = [
            _Source("catalog", essential, partial(load_product_facts, wanted + others), ([], 0),
                    partial(load_product_facts, wanted + others, cache_only=True)),
            _Source("reviews", self.deadlines["store"], partial(load_reviews, reviewed), {},
                    partial(load_reviews, reviewed, cache_only=True)),
            _Source("orders" if intent.intent in ORDER_INTENTS else "store_data",
                    essential if intent.intent in STORE_INTENTS else self.deadlines["store"],
                    partial(store_facts, intent.intent, turn, entities, memory), {},
                    partial(store_facts, intent.intent, turn, entities, memory, cache_only=True)
                    if intent.intent in STORE_DATA_INTENTS else dict),
        ]
        if promotions_first is None:
            sources.append(_Source("promotions", self.deadlines["store"], load_promotions, [],
                                   partial(_cached, PROMOTIONS_KEY)))
        (facts, _hits), reviews, store, *fetched = yield tuple(sources)
        promotions = promotions_first if promotions_first is not None else fetched[0]

        by_id = {f.id: f for f in facts}
        products = [by_id[pid] for pid in product_ids if pid in by_id]
        return AssembledContext(
            intent=intent.intent, confidence=intent.confidence, message=turn.text, memory=memory, entities=entities,
            products=products, focus=products[0] if intent.intent == "product_question" and products else None,
            seed=by_id.get(seed_id) if seed_id else None, reviews=reviews,
            promotions=self._relevant_promotions(intent, promotions, products),
            store=store,
            filters={k: v for k, v in (("demographic", filters.demographic), ("genres", sorted(filters.genres)),
                                        ("status", filters.status)) if v},
            page=turn.page, degraded=degraded, timings_ms=timings,
            prefetch_hit=lookup.hit if lookup is not None else None, prefetch=lookup,
            others=[by_id[pid] for pid in others if pid in by_id], config=config,
            conversation_id=turn.conversation_id,
            named_skus=[item.sku for item in map(index.get, entities.focus_ids) if item is not None],
        )

    @classmethod
    def _understand(cls, turn: TurnInput, memory: Memory, retrieved: list[ScoredProduct] | None,
                    filters: Filters) -> tuple[LexicalIndex, Entities, IntentResult, list[int], int | None]:
        """What the message names or points at, its intent, and the products the answer presents."""
        index = get_index()  # built by now (or by the retrieval thread): returns at once
        current_id = _current_product_id(turn.page, index)
        # The embedded index's own results serve entity resolution too (PostgreSQL ranks differently).
        own_results = retrieved if retrieved is not None and not uses_postgres() else None
        entities = resolve(turn.text, index=index, shown=memory.shown, current_product_id=current_id,
                           focus_id=memory.focus_id, retrieved=own_results)
        intent = classify(turn.text, previous_intent=memory.previous_intent, on_product_page=current_id is not None,
                          mentions_product=bool(entities.product_ids), refers_to_previous=bool(entities.referenced_ids))
        product_ids, seed_id = cls._products_for(intent, entities, retrieved or [], index, filters)
        return index, entities, intent, product_ids, seed_id

    @staticmethod
    def _products_for(intent: IntentResult, entities: Entities, retrieved: list[ScoredProduct], index: LexicalIndex,
                      filters: Filters) -> tuple[list[int], int | None]:
        """Which products the answer presents, and the seed of a "like X" request."""
        focus = entities.focus_ids
        if intent.intent == "product_question":
            return (focus or [r.product_id for r in retrieved])[:1], None
        if intent.intent == "recommendation":
            if focus:
                seed = focus[0]
                similar = index.similar(seed, limit=MAX_PRODUCTS, filters=Filters(
                    genres=filters.genres, demographic=filters.demographic or (index.get(seed).demographic if index.get(seed) else ""),
                    status=filters.status))
                if len(similar) < MAX_PRODUCTS:
                    more = index.similar(seed, limit=MAX_PRODUCTS, filters=Filters(exclude_ids=frozenset(s.product_id for s in similar)))
                    similar += more[: MAX_PRODUCTS - len(similar)]
                return [s.product_id for s in similar], seed
            return [r.product_id for r in retrieved if r.product_id not in focus][:MAX_PRODUCTS], None
        if intent.intent in {"product_discovery", "promotion", "return_request"}:
            ids = focus + [r.product_id for r in retrieved if r.product_id not in focus]
            return ids[:MAX_PRODUCTS], None
        return focus[:MAX_PRODUCTS], None

    @staticmethod
    def _relevant_promotions(intent: IntentResult, promotions: list[PromotionFacts], products: list[ProductFacts]) -> list[PromotionFacts]:
        if intent.intent in {"promotion", "checkout_help"}:
            return promotions
        return [p for p in promotions if any(p.applies_to(product) for product in products)][:2]
