"""The PM dashboard in the admin (/admin/dashboard/, staff only): charts drawn on the server.

Mounted by mangaassist/urls.py with `path("admin/dashboard/", include("chat.dashboard"))`, before
the admin's own URLs. The numbers come from chat.selectors_dashboard; this module only lays them out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from . import charts
from .selectors_dashboard import (
    ALARMS_BY_SIGNAL,
    HOUR,
    PERCENTILES,
    PREFETCH_MIN_LOOKUPS,
    TRANSITIONS_CHARTED,
    AlarmState,
    Dashboard,
    HourPercentiles,
    ThroughputState,
    dashboard_read,
)

WINDOW_HOURS = (6, 24, 72)
DEFAULT_WINDOW_HOURS = 24


# Number formats shared by the charts, their tables and the alarm table.
def ms(value: float) -> str:
    return f"{value:,.0f} ms"


def tokens(value: float) -> str:
    return f"{value:,.0f}"


def ratio(value: float) -> str:
    return f"{value:.2f}"


def percent(value: float) -> str:
    return f"{value * 100:.0f} %"


def _hour_label(start: datetime, hours: int) -> str:
    local = timezone.localtime(start)
    return local.strftime("%m-%d %H:00") if hours > 24 else local.strftime("%H:00")


def _latency_chart(*, slug: str, title: str, what: str, hours: list[HourPercentiles], window: int,
                   signal: str) -> charts.Chart:
    """p50/p95/p99 lines per hour; the alarm line shows how far p95 is from paging someone."""
    alarm = ALARMS_BY_SIGNAL[signal]
    labels = [_hour_label(hour.start, window) for hour in hours]
    newest = next((hour for hour in reversed(hours) if hour.count), None)
    summary = (f"Newest hour with answers ({_hour_label(newest.start, window)}): p95 {ms(newest.values[95])}."
               if newest else "No answers in this window.")
    return charts.line_chart(
        slug=slug, title=title,
        description=f"{what} per hour over the last {window} hours, p50, p95 and p99. {summary} "
                    f"Alarm above {ms(alarm.threshold)} (p95); target {alarm.target}.",
        x_labels=labels,
        series=[(f"p{p}", f"p{p}", [hour.values.get(p) for hour in hours]) for p in PERCENTILES],
        references=[("alarm", f"alarm {ms(alarm.threshold)}", alarm.threshold)],
        fmt=ms,
        table_head=["Hour", "Answers", *(f"p{p}" for p in PERCENTILES)],
        table_rows=[[label, f"{hour.count:,}", *(ms(hour.values[p]) if p in hour.values else "–" for p in PERCENTILES)]
                    for label, hour in zip(labels, hours)],
    )


def _token_chart(data: Dashboard, window: int) -> charts.Chart:
    """Prompt sizes on the Prometheus buckets, so the chart and the alert count the same way."""
    alarm = ALARMS_BY_SIGNAL["prompt_tokens"]
    distribution = data.prompt_tokens
    labels = [f"≤{b.high:,}" if b.low == 0 else f"{b.low + 1:,}–{b.high:,}" if b.high else f">{b.low:,}"
              for b in distribution.buckets]
    boundary = next((i for i, b in enumerate(distribution.buckets) if b.low >= alarm.threshold), None)
    shown = " ".join(f"p{p} {tokens(v)}." for p, v in sorted(distribution.percentiles.items()))
    return charts.column_chart(
        slug="prompt-tokens", title="Prompt tokens per answer",
        description=f"How many answers sent a prompt of each size, last {window} hours "
                    f"({distribution.count:,} answers). {shown} Alarm when p95 is above {tokens(alarm.threshold)}.",
        columns=[(label, b.count, b.low >= alarm.threshold) for label, b in zip(labels, distribution.buckets)],
        boundary=("alarm", f"alarm {tokens(alarm.threshold)}", boundary) if boundary is not None else None,
        fmt=tokens,
        table_head=["Prompt tokens", "Answers"],
        table_rows=[[label, f"{b.count:,}"] for label, b in zip(labels, distribution.buckets)],
    )


def _compression_chart(data: Dashboard, window: int) -> charts.Chart:
    """Which intents' prompts compress badly: where the summarization window needs tuning."""
    alarm = ALARMS_BY_SIGNAL["compression_ratio"]
    rows = data.compression
    return charts.bar_chart(
        slug="compression", title="Compression ratio by intent",
        description=f"Mean compressed / raw prompt tokens per intent, last {window} hours. "
                    f"Lower is better; target {alarm.target}, alarm above {ratio(alarm.threshold)}.",
        rows=[(r.intent, r.mean_ratio, f"{ratio(r.mean_ratio)} ({r.turns:,} answers)",
               r.mean_ratio > alarm.threshold) for r in rows],
        maximum=1.0,
        references=[("target", "target 0.65", 0.65), ("alarm", f"alarm {ratio(alarm.threshold)}", alarm.threshold)],
        fmt=ratio,
        table_head=["Intent", "Answers", "Mean ratio", "Prompt tokens", "Raw tokens"],
        table_rows=[[r.intent, f"{r.turns:,}", ratio(r.mean_ratio), tokens(r.prompt_tokens),
                     tokens(r.raw_prompt_tokens)] for r in rows],
    )


def _transition_label(previous_intent: str, intent: str) -> str:
    return f"{previous_intent or '(none)'} → {intent or '(none)'}"


def _prefetch_chart(data: Dashboard, window: int) -> charts.Chart:
    """Which transitions prefetch guesses wrong: what retraining the probabilities should fix."""
    alarm = ALARMS_BY_SIGNAL["prefetch_hit_rate"]
    rows = data.transitions
    charted = rows[:TRANSITIONS_CHARTED]
    more = f" The {TRANSITIONS_CHARTED} busiest of {len(rows)} transitions are drawn; the table lists all." \
        if len(rows) > TRANSITIONS_CHARTED else ""
    return charts.bar_chart(
        slug="prefetch", title="Prefetch hit rate by transition",
        description=f"Share of prefetch lookups that found the context ready, per transition (previous intent → "
                    f"intent), last {window} hours. Target {alarm.target}, "
                    f"alarm below {percent(alarm.threshold)}.{more}",
        rows=[(_transition_label(r.previous_intent, r.intent), r.rate,
               f"{percent(r.rate)} of {r.lookups:,} lookups",
               r.rate < alarm.threshold) for r in charted],
        maximum=1.0,
        references=[("alarm", f"alarm {percent(alarm.threshold)}", alarm.threshold), ("target", "target 30 %", 0.30)],
        fmt=percent,
        table_head=["Transition", "Lookups", "Hits", "Hit rate"],
        table_rows=[[_transition_label(r.previous_intent, r.intent), f"{r.lookups:,}", f"{r.hits:,}", percent(r.rate)]
                    for r in rows],
    )


def _alarm_value(state: AlarmState) -> str:
    if state.value is None:
        return "–"
    unit = state.alarm.unit
    if unit == "ms":
        return ms(state.value)
    if unit == "%":
        return percent(state.value)
    if unit == "tokens":
        return tokens(state.value)
    return ratio(state.value)


def _alarm_threshold(state: AlarmState) -> str:
    alarm = state.alarm
    shown = {"ms": ms, "%": percent, "tokens": tokens}.get(alarm.unit, ratio)(alarm.threshold)
    return f"{'>' if alarm.above else '<'} {shown}"


def _throughput_rows(state: ThroughputState) -> list[tuple[str, str]]:
    """Whatever throughput_state() returns (a mapping, a dataclass or a value), as label/value rows."""
    detail: Any = state.detail
    if dataclasses.is_dataclass(detail) and not isinstance(detail, type):
        detail = dataclasses.asdict(detail)
    if isinstance(detail, Mapping):
        return [(str(key).replace("_", " "), "–" if value is None else str(value)) for key, value in detail.items()]
    return [("state", str(detail))]


def dashboard_view(request: HttpRequest) -> TemplateResponse:
    """The dashboard page: latency over time, prompt sizes, compression, prefetch, route, alarms."""
    try:
        window = int(request.GET.get("hours", DEFAULT_WINDOW_HOURS))
    except ValueError:
        window = DEFAULT_WINDOW_HOURS
    if window not in WINDOW_HOURS:
        window = DEFAULT_WINDOW_HOURS
    now = timezone.now()
    data = dashboard_read(now=now, hours=window)
    context = {
        **admin.site.each_context(request),
        "title": "MangaAssist dashboard",
        "window": window,
        "window_choices": WINDOW_HOURS,
        "now": now,
        "data": data,
        "alarms": [{"state": state, "value": _alarm_value(state), "threshold": _alarm_threshold(state)}
                   for state in data.alarms],
        "alarm_minutes": 5,
        "prefetch_min_lookups": PREFETCH_MIN_LOOKUPS,
        "route_last_hour": sorted(data.route.last_hour.items(), key=lambda item: -item[1]),
        "route_fresh": data.route.at is not None and now - data.route.at < HOUR,
        "throughput": data.throughput,
        "throughput_rows": _throughput_rows(data.throughput) if data.throughput.detail is not None else [],
        "charts": [
            _latency_chart(slug="first-token", title="First-token latency", what="Time to the model's first token",
                           hours=data.first_token, window=window, signal="first_token_latency"),
            _latency_chart(slug="total", title="Total latency", what="Time to the whole answer",
                           hours=data.total, window=window, signal="total_latency"),
            _token_chart(data, window),
            _compression_chart(data, window),
            _prefetch_chart(data, window),
        ],
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


# admin_view: staff only (others go to the admin login), never cached, CSRF-protected like the admin.
dashboard = admin.site.admin_view(dashboard_view)

urlpatterns = [path("", dashboard, name="admin_dashboard")]
