"""Reads for the PM dashboard (/admin/dashboard/): latency over time, prompt sizes, prefetch, alarms.

Everything comes from TurnRecord (one row per answer), aggregated in the database: a fixed
number of queries whatever the number of rows. Percentiles are nearest-rank (the
ceil(q * n)-th smallest value): one query counts the values per hour, a second numbers them
with ROW_NUMBER() in (hour, value) order and returns only the rows at the wanted ranks.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.db.models import Avg, Case, Count, F, IntegerField, Q, QuerySet, Sum, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from .metrics import TOKEN_BUCKETS
from .models import TurnRecord

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
PERCENTILES = (50, 95, 99)
LATENCY_COLUMNS = ("first_token_ms", "total_ms")
# The alarm table of DESIGN.md §6, read over the same 5 minutes as ops/prometheus/alerts.yml.
ALARM_WINDOW = timedelta(minutes=5)
# Fewer prefetch lookups than this in the alarm window are too few to judge a hit rate (as in alerts.yml).
PREFETCH_MIN_LOOKUPS = 20
# The chart draws the busiest transitions; the data table under it lists them all.
TRANSITIONS_CHARTED = 12


@dataclass(frozen=True)
class Alarm:
    """One row of DESIGN.md §6's alarm table; `alert` and `signal` name its rule in alerts.yml."""

    alert: str
    signal: str
    title: str
    threshold: float
    above: bool  # True: alarm when the value is above the threshold; False: below it.
    unit: str
    # Prometheus reads seconds where TurnRecord holds milliseconds.
    prometheus_scale: float
    target: str
    action: str


ALARMS: tuple[Alarm, ...] = (
    Alarm("MangaAssistFirstTokenSlow", "first_token_latency", "First token latency p95", 500, True, "ms", 1000,
          "p95 < 400 ms",
          "Switch to provisioned throughput (automatic): check that the throughput schedule moved the route "
          "to the provisioned ARN and that it is InService."),
    Alarm("MangaAssistTotalLatencySlow", "total_latency", "Total latency p95", 2000, True, "ms", 1000,
          "p95 < 1.5 s",
          "Reduce max tokens (LLM_MAX_OUTPUT_TOKENS) and compress harder (lower the prompt budgets in the admin)."),
    Alarm("MangaAssistPromptTokensHigh", "prompt_tokens", "Prompt tokens p95", 2500, True, "tokens", 1,
          "p50 < 1,200",
          "Review the compression pipeline: prompt budgets, the verbatim window and the summaries."),
    Alarm("MangaAssistCompressionRatioHigh", "compression_ratio", "Compression ratio (mean)", 0.85, True, "", 1,
          "< 0.65",
          "Tune the summarization window: summarize older turns sooner and keep fewer turns verbatim."),
    Alarm("MangaAssistContextAssemblySlow", "context_assembly", "Context assembly p95", 350, True, "ms", 1000,
          "p95 < 200 ms",
          "Check downstream latency: the database, the cache, the store services; "
          "mangaassist_context_degraded_total shows which source times out."),
    Alarm("MangaAssistPrefetchHitRateLow", "prefetch_hit_rate", "Prefetch hit rate", 0.15, False, "%", 1,
          "> 30 %",
          "Retrain transition probabilities (prefetch transitions in the admin) so prefetch follows what "
          "customers ask next."),
)
ALARMS_BY_SIGNAL = {alarm.signal: alarm for alarm in ALARMS}


@dataclass(frozen=True)
class HourPercentiles:
    start: datetime
    count: int
    values: dict[int, float]  # percentile -> value; empty when the hour had no answers


@dataclass(frozen=True)
class TokenBucket:
    low: int  # exclusive
    high: int | None  # inclusive; None: no upper bound
    count: int


@dataclass(frozen=True)
class TokenDistribution:
    buckets: list[TokenBucket]
    count: int
    percentiles: dict[int, float]


@dataclass(frozen=True)
class IntentCompression:
    intent: str
    turns: int
    mean_ratio: float
    prompt_tokens: int
    raw_prompt_tokens: int


@dataclass(frozen=True)
class TransitionHitRate:
    previous_intent: str
    intent: str
    lookups: int
    hits: int

    @property
    def rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass(frozen=True)
class RouteState:
    """The route of the newest answer, and how the last hour's answers were routed."""

    route: str
    backend: str
    at: datetime | None
    last_hour: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AlarmState:
    alarm: Alarm
    value: float | None
    samples: int
    # "alarm", "ok" or "no_data" (no answers, or too few prefetch lookups to judge).
    state: str


@dataclass(frozen=True)
class ThroughputState:
    """What throughput.selectors.throughput_state() said, or why there is nothing to show."""

    configured: bool
    detail: Any = None
    error: str = ""


@dataclass(frozen=True)
class Dashboard:
    since: datetime
    until: datetime
    hours: list[datetime]
    first_token: list[HourPercentiles]
    total: list[HourPercentiles]
    prompt_tokens: TokenDistribution
    compression: list[IntentCompression]
    transitions: list[TransitionHitRate]
    route: RouteState
    alarms: list[AlarmState]
    throughput: ThroughputState


def nearest_rank(count: int, percentile: int) -> int:
    """1-based rank of the nearest-rank percentile among `count` sorted values: ceil(p/100 * count).

    Integer arithmetic, so that p95 of 20 values is exactly the 19th (0.95 * 20 is not exactly 19.0).
    """
    return (count * percentile + 99) // 100


def values_at_ranks(*, records: QuerySet[TurnRecord], column: str, counts: dict[int, int],
                    percentiles: Sequence[int], partition: Case | None = None) -> dict[int, dict[int, float]]:
    """Nearest-rank percentiles of `column` per partition: {partition: {percentile: value}}.

    `counts` holds the non-null values of `column` per partition (0 without one), counted with the
    same filter. One query: the rows are numbered in (partition, value) order and only the rows at
    the wanted positions come back. (Comparing ROW_NUMBER with a per-partition COUNT window instead
    makes Django repeat the COUNT window for each percentile; that is twice as slow on SQLite.)
    """
    wanted: dict[int, list[tuple[int, int]]] = {}  # position -> [(partition, percentile)]
    offset = 0
    for part in sorted(counts):
        if not counts[part]:  # e.g. an hour whose answers all failed before a total: nothing to rank
            continue
        for percentile in percentiles:
            wanted.setdefault(offset + nearest_rank(counts[part], percentile), []).append((part, percentile))
        offset += counts[part]
    if not wanted:
        return {}
    order_by = [partition, F(column).asc()] if partition is not None else [F(column).asc()]
    rows = (
        records.filter(**{f"{column}__isnull": False})
        .order_by()  # TurnRecord's default ordering would add a useless sort
        .annotate(pct_position=Window(RowNumber(), order_by=order_by))
        .filter(pct_position__in=list(wanted))
        .values_list("pct_position", column)
    )
    result: dict[int, dict[int, float]] = {part: {} for part in counts if counts[part]}
    for position, value in rows:
        for part, percentile in wanted[position]:
            result[part][percentile] = float(value)
    return result


def hour_starts(*, now: datetime, hours: int) -> list[datetime]:
    """The starts of the last `hours` whole hours, the current (partial) hour last.

    Hours are whole in the site's time zone (Asia/Tokyo), then stepped in UTC so that a DST
    change elsewhere cannot make an hour 0 or 2 hours long.
    """
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0).astimezone(dt_timezone.utc)
    return [current - HOUR * offset for offset in range(hours - 1, -1, -1)]


def _hour_of(starts: list[datetime]) -> Case:
    """The index of a record's hour, in SQL: plain comparisons on the indexed column.

    (TruncHour would call a Python function per row on SQLite.) Records are already limited to
    the window, so the first hour whose end lies after created_at is the record's hour.
    """
    return Case(*[When(created_at__lt=start + HOUR, then=Value(index)) for index, start in enumerate(starts)],
                output_field=IntegerField())


def latency_by_hour(*, starts: list[datetime], until: datetime) -> dict[str, list[HourPercentiles]]:
    """p50/p95/p99 of first-token and total latency (ms) for each hour: {"first_token_ms": [...], "total_ms": [...]}."""
    records = TurnRecord.objects.filter(created_at__gte=starts[0], created_at__lt=until)
    hour = _hour_of(starts)
    counted: dict[str, dict[int, int]] = {column: {} for column in LATENCY_COLUMNS}
    for row in (records.order_by().annotate(hour=hour).values("hour")
                .annotate(**{column: Count(column) for column in LATENCY_COLUMNS})):
        for column in LATENCY_COLUMNS:
            counted[column][row["hour"]] = row[column]
    series: dict[str, list[HourPercentiles]] = {}
    for column in LATENCY_COLUMNS:
        found = values_at_ranks(records=records, column=column, counts=counted[column], percentiles=PERCENTILES,
                                partition=hour)
        series[column] = [HourPercentiles(start, counted[column].get(index, 0), found.get(index, {}))
                          for index, start in enumerate(starts)]
    return series


def prompt_token_distribution(*, since: datetime, until: datetime) -> TokenDistribution:
    """Answers per prompt-size bucket (the Prometheus buckets), and the p50/p95/p99."""
    # An answer that never built a prompt (failed before compression) records 0 tokens: not a prompt size.
    records = TurnRecord.objects.filter(created_at__gte=since, created_at__lt=until, prompt_tokens__gt=0)
    edges: list[tuple[int, int | None]] = list(zip((0, *TOKEN_BUCKETS), (*TOKEN_BUCKETS, None)))
    counts = records.aggregate(**{
        f"bucket_{index}": Count("pk", filter=Q(prompt_tokens__gt=low) & (Q(prompt_tokens__lte=high) if high else Q()))
        for index, (low, high) in enumerate(edges)
    })
    buckets = [TokenBucket(low, high, counts[f"bucket_{index}"]) for index, (low, high) in enumerate(edges)]
    total = sum(bucket.count for bucket in buckets)
    found = values_at_ranks(records=records, column="prompt_tokens", counts={0: total}, percentiles=PERCENTILES)
    return TokenDistribution(buckets=buckets, count=total, percentiles=found.get(0, {}))


def compression_by_intent(*, since: datetime, until: datetime) -> list[IntentCompression]:
    """Mean compressed/raw ratio per intent (the alarm's statistic), with the token sums beside it."""
    rows = (
        TurnRecord.objects.filter(created_at__gte=since, created_at__lt=until, compression_ratio__isnull=False)
        .values("intent")
        .annotate(turns=Count("pk"), mean_ratio=Avg("compression_ratio"), prompt=Sum("prompt_tokens"),
                  raw=Sum("raw_prompt_tokens"))
        .order_by("intent")
    )
    return [IntentCompression(r["intent"] or "unknown", r["turns"], r["mean_ratio"], r["prompt"], r["raw"])
            for r in rows]


def prefetch_by_transition(*, since: datetime, until: datetime) -> list[TransitionHitRate]:
    """Prefetch lookups and hits per transition (previous intent -> intent), busiest first."""
    rows = (
        TurnRecord.objects.filter(created_at__gte=since, created_at__lt=until, prefetch_hit__isnull=False)
        .values("previous_intent", "intent")
        .annotate(lookups=Count("pk"), hits=Count("pk", filter=Q(prefetch_hit=True)))
        .order_by("-lookups", "previous_intent", "intent")
    )
    return [TransitionHitRate(r["previous_intent"], r["intent"], r["lookups"], r["hits"]) for r in rows]


def route_state(*, now: datetime) -> RouteState:
    """The newest answer's route and backend, and the last hour's answers per route."""
    newest = TurnRecord.objects.order_by("-created_at").values("route", "backend", "created_at").first()
    last_hour = dict(
        TurnRecord.objects.filter(created_at__gte=now - HOUR, created_at__lte=now)
        .order_by()
        .values("route")
        .annotate(answers=Count("pk"))
        .values_list("route", "answers")
    )
    if newest is None:
        return RouteState(route="", backend="", at=None, last_hour=last_hour)
    return RouteState(route=newest["route"], backend=newest["backend"], at=newest["created_at"], last_hour=last_hour)


def _judge(alarm: Alarm, value: float | None, samples: int) -> AlarmState:
    if value is None or samples == 0:
        return AlarmState(alarm, value, samples, "no_data")
    breached = value > alarm.threshold if alarm.above else value < alarm.threshold
    return AlarmState(alarm, value, samples, "alarm" if breached else "ok")


def alarm_states(*, now: datetime) -> list[AlarmState]:
    """Each alarm of the table over the last 5 minutes of answers, in ALARMS order."""
    recent = TurnRecord.objects.filter(created_at__gte=now - ALARM_WINDOW, created_at__lte=now)
    percentile_signals = (  # signal, column, the answers it is read from
        ("first_token_latency", "first_token_ms", recent),
        ("total_latency", "total_ms", recent),
        ("prompt_tokens", "prompt_tokens", recent.filter(prompt_tokens__gt=0)),
        ("context_assembly", "assembly_ms", recent),
    )
    totals = recent.aggregate(
        first_token_latency=Count("first_token_ms"), total_latency=Count("total_ms"),
        prompt_tokens=Count("pk", filter=Q(prompt_tokens__gt=0)), context_assembly=Count("assembly_ms"),
        ratio=Avg("compression_ratio"), ratio_n=Count("compression_ratio"),
        lookups=Count("pk", filter=Q(prefetch_hit__isnull=False)), hits=Count("pk", filter=Q(prefetch_hit=True)),
    )
    states: dict[str, AlarmState] = {}
    for signal, column, records in percentile_signals:
        found = values_at_ranks(records=records, column=column, counts={0: totals[signal]}, percentiles=(95,))
        states[signal] = _judge(ALARMS_BY_SIGNAL[signal], found.get(0, {}).get(95), totals[signal])
    states["compression_ratio"] = _judge(ALARMS_BY_SIGNAL["compression_ratio"], totals["ratio"], totals["ratio_n"])
    lookups, prefetch = totals["lookups"], ALARMS_BY_SIGNAL["prefetch_hit_rate"]
    hit_rate = totals["hits"] / lookups if lookups else None
    if lookups < PREFETCH_MIN_LOOKUPS:
        states["prefetch_hit_rate"] = AlarmState(prefetch, hit_rate, lookups, "no_data")
    else:
        states["prefetch_hit_rate"] = _judge(prefetch, hit_rate, lookups)
    return [states[alarm.signal] for alarm in ALARMS]


def throughput_state_read() -> ThroughputState:
    """The provisioned-throughput state, if the throughput app provides it.

    The throughput app may not have `throughput.selectors.throughput_state` (yet): that reads as
    "not configured". If it is there but fails, the dashboard still renders and says so.
    """
    try:
        module = importlib.import_module("throughput.selectors")
    except ModuleNotFoundError as exc:
        if exc.name in {"throughput", "throughput.selectors"}:
            return ThroughputState(configured=False)
        logger.exception("throughput.selectors could not be imported")
        return ThroughputState(configured=True, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - another app's broken module must not take the dashboard down
        logger.exception("throughput.selectors could not be imported")
        return ThroughputState(configured=True, error=f"{type(exc).__name__}: {exc}")
    reader = getattr(module, "throughput_state", None)
    if not callable(reader):
        return ThroughputState(configured=False)
    try:
        return ThroughputState(configured=True, detail=reader())
    except Exception as exc:  # noqa: BLE001 - as above: say so on the page, log the traceback
        logger.exception("throughput_state() failed")
        return ThroughputState(configured=True, error=f"{type(exc).__name__}: {exc}")


def dashboard_read(*, now: datetime, hours: int) -> Dashboard:
    """Everything the dashboard shows, for the last `hours` hours up to `now`."""
    starts = hour_starts(now=now, hours=hours)
    # The window ends now, not at the end of the hour: answers saved while the page is being read
    # stay out of it, so the counts and the ranks come from the same rows.
    since, until = starts[0], now
    latency = latency_by_hour(starts=starts, until=until)
    return Dashboard(
        since=since, until=until, hours=starts,
        first_token=latency["first_token_ms"],
        total=latency["total_ms"],
        prompt_tokens=prompt_token_distribution(since=since, until=until),
        compression=compression_by_intent(since=since, until=until),
        transitions=prefetch_by_transition(since=since, until=until),
        route=route_state(now=now),
        alarms=alarm_states(now=now),
        throughput=throughput_state_read(),
    )
