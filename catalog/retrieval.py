"""The embedded lexical index over the catalog (BM25), kept in step with the database.

Built once per process from the catalog, then rebuilt in the background when the
catalog version (bumped on every product change, shared through the cache so every
process sees it) moves on. Queries never wait for a rebuild: they use the index
they have until the new one is swapped in.
"""

from __future__ import annotations

import logging
import heapq
import math
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from django.core.cache import cache

from .text import compact, fold, tokens

logger = logging.getLogger(__name__)

CATALOG_VERSION_KEY = "catalog:version"
VERSION_CHECK_SECONDS = 1.0

# Field weights: a word in the title counts far more than one in the description.
FIELD_WEIGHTS = {"title": 3.0, "authors": 2.0, "genres": 1.5, "meta": 1.0, "description": 1.0}
K1 = 1.2
COMMON_TERM_SHARE = 0.01
B = 0.75


@dataclass(frozen=True)
class IndexedProduct:
    """What the index keeps of a product: enough to filter and rank without the database."""

    product_id: int
    sku: str
    titles: tuple[str, ...]
    authors: tuple[str, ...]
    demographic: str
    genres: frozenset[str]
    status: str
    popularity: float


@dataclass(frozen=True)
class ScoredProduct:
    product_id: int
    score: float


@dataclass
class Filters:
    genres: frozenset[str] = frozenset()
    demographic: str = ""
    status: str = ""
    exclude_ids: frozenset[int] = frozenset()

    def accepts(self, item: IndexedProduct) -> bool:
        if item.product_id in self.exclude_ids:
            return False
        if self.demographic and item.demographic != self.demographic:
            return False
        if self.status and item.status != self.status:
            return False
        return not self.genres or bool(self.genres & item.genres)


@dataclass
class LexicalIndex:
    """BM25 over weighted fields; one posting list per term."""

    items: list[IndexedProduct] = field(default_factory=list)
    postings: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    doc_lengths: list[float] = field(default_factory=list)
    by_id: dict[int, int] = field(default_factory=dict)
    by_sku: dict[str, int] = field(default_factory=dict)
    titles_compact: list[tuple[str, ...]] = field(default_factory=list)
    # Character trigrams of the titles -> positions: candidates for misspelled titles.
    title_grams: dict[str, list[int]] = field(default_factory=dict)
    title_gram_sets: list[tuple[frozenset[str], ...]] = field(default_factory=list)
    by_genre: dict[str, list[int]] = field(default_factory=dict)
    by_demographic: dict[str, list[int]] = field(default_factory=dict)
    most_popular: list[int] = field(default_factory=list)
    by_popularity: list[int] = field(default_factory=list)
    version: object = None

    @classmethod
    def build(cls, documents: Iterable[tuple[IndexedProduct, dict[str, str]]], *, version: object = None) -> "LexicalIndex":
        index = cls(version=version)
        postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        grams: dict[str, list[int]] = defaultdict(list)
        for position, (item, fields) in enumerate(documents):
            weighted: Counter[str] = Counter()
            for name, text in fields.items():
                weight = FIELD_WEIGHTS.get(name, 1.0)
                for term in tokens(text):
                    weighted[term] += weight
            for term, tf in weighted.items():
                postings[term].append((position, tf))
            index.items.append(item)
            index.doc_lengths.append(sum(weighted.values()))
            index.by_id[item.product_id] = position
            index.by_sku[item.sku] = item.product_id
            index.titles_compact.append(tuple(compact(title) for title in item.titles if title))
            gram_sets = tuple(frozenset(trigrams(t)) for t in index.titles_compact[-1] if len(t) >= 5)
            index.title_gram_sets.append(gram_sets)
            for gram in frozenset().union(*gram_sets):
                grams[gram].append(position)
        index.postings = dict(postings)
        index.title_grams = dict(grams)
        by_genre: dict[str, list[int]] = defaultdict(list)
        by_demographic: dict[str, list[int]] = defaultdict(list)
        for position, item in enumerate(index.items):
            for genre in item.genres:
                by_genre[genre].append(position)
            if item.demographic:
                by_demographic[item.demographic].append(position)
        index.by_genre, index.by_demographic = dict(by_genre), dict(by_demographic)
        index.by_popularity = sorted(range(len(index.items)), key=lambda p: -index.items[p].popularity)
        index.most_popular = index.by_popularity[:50]
        return index

    def title_candidates(self, text: str, *, limit: int = 5, min_share: float = 0.6) -> list[int]:
        """Positions of titles most of whose trigrams occur in `text` (typos and all)."""
        grams = trigrams(compact(text))
        shared: Counter[int] = Counter()
        common = max(300, len(self.items) // 100)  # a trigram in 1 % of titles says little and costs a lot
        for gram in grams:
            positions = self.title_grams.get(gram, ())
            if len(positions) <= common:
                shared.update(positions)
        scored = []
        for position, _ in shared.most_common(64):
            share = max((len(title & grams) / len(title) for title in self.title_gram_sets[position]), default=0.0)
            if share >= min_share:
                scored.append((share, self.items[position].popularity, position))
        scored.sort(reverse=True)
        return [position for _, _, position in scored[:limit]]

    def __len__(self) -> int:
        return len(self.items)

    def get(self, product_id: int) -> IndexedProduct | None:
        position = self.by_id.get(product_id)
        return None if position is None else self.items[position]

    def search(self, query: str, *, limit: int = 5, filters: Filters | None = None) -> list[ScoredProduct]:
        """Products ranked by BM25 for `query`; ties and filter-only queries by popularity."""
        filters = filters or Filters()
        n_docs = len(self.items)
        if not n_docs:
            return []
        avg_length = (sum(self.doc_lengths) / n_docs) or 1.0
        scores: dict[int, float] = defaultdict(float)
        # Terms in a large share of the catalog (common kana bigrams, "manga") carry almost no
        # weight (tiny idf) but cost a walk over thousands of postings: skip them.
        common = max(300, int(n_docs * COMMON_TERM_SHARE))
        for term in set(tokens(query)):
            posting = self.postings.get(term)
            if not posting or len(posting) > common:
                continue
            idf = math.log(1 + (n_docs - len(posting) + 0.5) / (len(posting) + 0.5))
            for position, tf in posting:
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * self.doc_lengths[position] / avg_length))
                scores[position] += idf * norm
        def key(kv: tuple[int, float]) -> tuple[float, float]:
            return (kv[1], self.items[kv[0]].popularity)

        if scores:
            # The best few first (a heap, not a sort of every match); a full sort only if filters reject them.
            ranked = heapq.nlargest(limit * 8, scores.items(), key=key)
            out = self._accepted(ranked, limit, filters)
            if len(out) < limit and len(scores) > len(ranked):
                out = self._accepted(sorted(scores.items(), key=key, reverse=True), limit, filters)
            return out
        return self._accepted(((position, 0.0) for position in self.by_popularity), limit, filters)

    def _accepted(self, ranked: Iterable[tuple[int, float]], limit: int, filters: Filters) -> list[ScoredProduct]:
        out: list[ScoredProduct] = []
        for position, score in ranked:
            item = self.items[position]
            if filters.accepts(item):
                out.append(ScoredProduct(item.product_id, round(score, 4)))
                if len(out) >= limit:
                    break
        return out

    def similar(self, product_id: int, *, limit: int = 3, filters: Filters | None = None) -> list[ScoredProduct]:
        """Series like `product_id`: shared genres, same demographic, then popularity."""
        seed = self.get(product_id)
        if seed is None:
            return []
        filters = filters or Filters()
        exclude = filters.exclude_ids | {product_id}
        scored: list[tuple[float, IndexedProduct]] = []
        # Only series that can score: a shared genre, the same demographic, or among the most popular.
        candidates: set[int] = set(self.most_popular)
        for genre in seed.genres:
            candidates.update(self.by_genre.get(genre, ()))
        if seed.demographic:
            candidates.update(self.by_demographic.get(seed.demographic, ()))
        for item in (self.items[position] for position in candidates):
            if item.product_id in exclude or not filters.accepts(item):
                continue
            union = seed.genres | item.genres
            genre_score = len(seed.genres & item.genres) / len(union) if union else 0.0
            demographic_score = 0.5 if seed.demographic and item.demographic == seed.demographic else 0.0
            score = genre_score + demographic_score + 0.3 * item.popularity
            if score > 0:
                scored.append((score, item))
        scored.sort(key=lambda pair: (-pair[0], -pair[1].popularity))
        return [ScoredProduct(item.product_id, round(score, 4)) for score, item in scored[:limit]]


def trigrams(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


def catalog_version() -> object:
    try:
        return cache.get(CATALOG_VERSION_KEY, 0)
    except Exception:  # noqa: BLE001 - a cache outage must not stop search
        return None


def catalog_version_bump() -> None:
    try:
        cache.set(CATALOG_VERSION_KEY, time.time_ns(), timeout=None)
    except Exception:  # noqa: BLE001
        logger.warning("could not bump the catalog version; indexes refresh on restart")


class IndexHolder:
    """The process's index: built on first use, rebuilt in the background when stale."""

    def __init__(self) -> None:
        self._index: LexicalIndex | None = None
        self._lock = threading.Lock()
        self._rebuilding = False
        self._checked_at = 0.0

    def get(self) -> LexicalIndex:
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = _build_from_database(catalog_version())
                return self._index
        now = time.monotonic()
        if now - self._checked_at > VERSION_CHECK_SECONDS:
            self._checked_at = now
            version = catalog_version()
            if version is not None and version != index.version and not self._rebuilding:
                self._rebuilding = True
                threading.Thread(target=self._rebuild, args=(version,), daemon=True).start()
        return index

    def _rebuild(self, version: object) -> None:
        from django.db import close_old_connections

        try:
            self._index = _build_from_database(version)
        except Exception:  # noqa: BLE001 - keep serving the old index
            logger.exception("catalog index rebuild failed")
        finally:
            self._rebuilding = False
            close_old_connections()

    def reset(self) -> None:
        """Forget the index (tests, and after a bulk import in this process)."""
        with self._lock:
            self._index = None


def _build_from_database(version: object) -> LexicalIndex:
    from .models import Product

    started = time.perf_counter()
    rows = Product.objects.values_list(
        "id", "sku", "title_en", "title_ja", "title_kana", "authors", "publisher",
        "demographic", "genres", "status", "description", "sales_millions",
    ).order_by("id")
    documents = []
    for (pid, sku, title_en, title_ja, title_kana, authors, publisher, demographic,
         genres, status, description, sales) in rows.iterator(chunk_size=2000):
        popularity = math.log1p(float(sales)) / math.log1p(600) if sales else 0.0
        item = IndexedProduct(
            product_id=pid,
            sku=sku,
            titles=tuple(t for t in (title_en, title_ja, title_kana) if t),
            authors=tuple(authors or ()),
            demographic=demographic,
            genres=frozenset(genres or ()),
            status=status,
            popularity=popularity,
        )
        fields = {
            "title": " ".join(item.titles),
            "authors": " ".join(item.authors),
            "genres": " ".join(item.genres),
            "meta": f"{demographic} {publisher} {status}",
            "description": description,
        }
        documents.append((item, fields))
    index = LexicalIndex.build(documents, version=version)
    logger.info("catalog index: %d products in %.0f ms", len(index), (time.perf_counter() - started) * 1000)
    return index


index_holder = IndexHolder()


def get_index() -> LexicalIndex:
    return index_holder.get()


def _tsquery(terms: list[str]) -> str:
    """An OR query over our own tokens (letters, digits, kana/kanji only: nothing to escape)."""
    return " | ".join(f"'{term}'" for term in dict.fromkeys(terms))


def postgres_search(query: str, *, limit: int = 5, filters: Filters | None = None) -> list[ScoredProduct]:
    """PostgreSQL full-text search over the pre-tokenised terms, ranked by ts_rank; titles that
    match nothing fall back to trigram similarity (misspellings)."""
    from django.db.models.expressions import RawSQL

    from .models import Product

    filters = filters or Filters()
    products = Product.objects.all()
    if filters.demographic:
        products = products.filter(demographic=filters.demographic)
    if filters.status:
        products = products.filter(status=filters.status)
    if filters.genres:
        from django.db.models import Q

        genre_filter = Q()
        for genre in filters.genres:
            genre_filter |= Q(genres__contains=[genre])
        products = products.filter(genre_filter)
    if filters.exclude_ids:
        products = products.exclude(id__in=filters.exclude_ids)
    terms = tokens(query)
    if not terms:
        return [ScoredProduct(pid, 0.0) for pid in products.order_by("-sales_millions").values_list("id", flat=True)[:limit]]
    tsquery = _tsquery(terms)
    ranked = (products.extra(where=["to_tsvector('simple', search_text) @@ to_tsquery('simple', %s)"], params=[tsquery])
              .annotate(rank=RawSQL("ts_rank(to_tsvector('simple', search_text), to_tsquery('simple', %s))", (tsquery,)))
              .order_by("-rank", "-sales_millions").values_list("id", "rank")[:limit])
    found = [ScoredProduct(pid, round(float(rank), 4)) for pid, rank in ranked]
    if len(found) < limit:
        text = fold(query)
        similar = (products.exclude(id__in=[f.product_id for f in found])
                   .annotate(similarity=RawSQL("GREATEST(word_similarity(lower(title_en), %s), word_similarity(title_ja, %s))",
                                               (text, text)))
                   .filter(similarity__gte=0.45).order_by("-similarity").values_list("id", "similarity")[: limit - len(found)])
        found += [ScoredProduct(pid, round(float(sim), 4)) for pid, sim in similar]
    return found


def uses_postgres() -> bool:
    """Whether the chat's retrieval asks PostgreSQL (RETRIEVAL_BACKEND) rather than the in-memory index."""
    from django.conf import settings
    from django.db import connection

    backend = settings.RETRIEVAL_BACKEND
    return backend == "postgres" or (backend == "auto" and connection.vendor == "postgresql")


def search(query: str, *, limit: int = 5, filters: Filters | None = None) -> list[ScoredProduct]:
    """Retrieval for the chat: the in-memory index, or PostgreSQL's full-text search (`uses_postgres`)."""
    if uses_postgres():
        return postgres_search(query, limit=limit, filters=filters)
    return get_index().search(query, limit=limit, filters=filters)
