"""Reads for provisioned throughput: is capacity wanted now, where to route a turn, what it costs.

One rule decides everything (`capacity_plan`): a window kept down by hand refuses capacity; a
window kept up by hand or by the latency alarm wants it; otherwise the beat schedule's peak
hours decide. Scale-up, scale-down, reconciliation and routing all ask it, so they agree.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from chat.llm.base import Route

from . import schedule
from .models import (
    ACTIVE_STATUSES,
    CapacityWindow,
    ProvisionedThroughput,
    Purpose,
    ThroughputAction,
    ThroughputStatus,
    WindowKind,
)

logger = logging.getLogger(__name__)

ROUTE_CACHE_KEY = "throughput:route:v1"
ROUTE_NAME = "provisioned"


# --- peak hours ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeakState:
    active: bool
    started_at: datetime | None  # the scale-up run that opened the current peak
    next_start: datetime | None
    next_end: datetime | None
    source: str  # "schedule" (the installed crontabs) or "settings" (not installed)


def peak_state(*, now: datetime) -> PeakState:
    """Peak hours as the installed beat schedule defines them: since its last scale-up run,
    unless a scale-down run came after it. A disabled scale-up entry means no peak at all."""
    from django_celery_beat.models import PeriodicTask

    tasks = {task.name: task for task in PeriodicTask.objects.filter(
        name__in=[schedule.SCALE_UP, schedule.SCALE_DOWN]).select_related("crontab")}
    up, down = tasks.get(schedule.SCALE_UP), tasks.get(schedule.SCALE_DOWN)
    if up is None or down is None or up.crontab is None or down.crontab is None:
        return _peak_from_settings(now)
    up_cron, down_cron = up.crontab.schedule, down.crontab.schedule
    up_tz, down_tz = up.crontab.timezone, down.crontab.timezone
    last_up = schedule.crontab_previous_run(up_cron, now=now, tz=up_tz) if up.enabled else None
    last_down = schedule.crontab_previous_run(down_cron, now=now, tz=down_tz) if down.enabled else None
    active = last_up is not None and (last_down is None or last_up > last_down)
    return PeakState(
        active=active,
        started_at=last_up if active else None,
        next_start=schedule.crontab_next_run(up_cron, now=now, tz=up_tz) if up.enabled else None,
        next_end=schedule.crontab_next_run(down_cron, now=now, tz=down_tz) if down.enabled else None,
        source="schedule",
    )


def _peak_from_settings(now: datetime) -> PeakState:
    """PEAK_START_HOUR..PEAK_END_HOUR in Tokyo, for a database whose schedule is not installed."""
    local = now.astimezone(schedule.SCHEDULE_TIMEZONE)
    start, end = settings.PEAK_START_HOUR, settings.PEAK_END_HOUR

    def at(day: date, hour: int) -> datetime:
        return datetime.combine(day, time(hour), tzinfo=schedule.SCHEDULE_TIMEZONE)

    today = local.date()
    starts = [at(today + timedelta(days=d), start) for d in (-1, 0, 1)]
    ends = [at(today + timedelta(days=d), end) for d in (-1, 0, 1)]
    last_start = max(s for s in starts if s <= local)
    last_end = max(e for e in ends if e <= local)
    active = last_start > last_end
    return PeakState(active=active, started_at=last_start if active else None,
                     next_start=min(s for s in starts if s > local), next_end=min(e for e in ends if e > local),
                     source="settings")


# --- the wanted state -------------------------------------------------------------------------------


def windows_active(*, now: datetime) -> list[CapacityWindow]:
    return list(CapacityWindow.objects.filter(starts_at__lte=now, ends_at__gt=now).order_by("-starts_at", "-id"))


@dataclass(frozen=True)
class CapacityPlan:
    wanted: bool
    reason: str
    until: datetime | None  # when the plan changes next, when known
    window: CapacityWindow | None
    peak: PeakState


def capacity_plan(*, now: datetime) -> CapacityPlan:
    """Whether capacity should exist at `now`, and why (the admin shows the reason)."""
    peak = peak_state(now=now)
    windows = windows_active(now=now)
    kept_down = next((w for w in windows if w.kind == WindowKind.MANUAL_OFF), None)
    if kept_down is not None:
        return CapacityPlan(False, f"kept down by {kept_down.created_by}", kept_down.ends_at, kept_down, peak)
    kept_up = next((w for w in windows if w.kind in (WindowKind.MANUAL_ON, WindowKind.ALARM)), None)
    if kept_up is not None:
        # Capacity stays for the later of the window's end and the peak's end.
        until = kept_up.ends_at
        if peak.active and peak.next_end is not None:
            until = max(until, peak.next_end)
        who = "the latency alarm" if kept_up.kind == WindowKind.ALARM else kept_up.created_by
        return CapacityPlan(True, f"kept up by {who}", until, kept_up, peak)
    if peak.active:
        return CapacityPlan(True, "peak hours", peak.next_end, None, peak)
    return CapacityPlan(False, "off-peak", peak.next_start, None, peak)


def capacity_wanted(*, now: datetime) -> bool:
    return capacity_plan(now=now).wanted


# --- rows -------------------------------------------------------------------------------------------


def throughput_active(*, purpose: str = Purpose.CHAT) -> ProvisionedThroughput | None:
    """The one row of `purpose` whose model may exist (the constraint allows no second)."""
    return ProvisionedThroughput.objects.filter(purpose=purpose, status__in=ACTIVE_STATUSES).first()


def throughput_last_failure(*, purpose: str = Purpose.CHAT) -> ProvisionedThroughput | None:
    return (ProvisionedThroughput.objects.filter(purpose=purpose, status=ThroughputStatus.FAILED)
            .order_by("-ended_at", "-id").first())


def actions_recent(*, limit: int = 15) -> list[ThroughputAction]:
    return list(ThroughputAction.objects.select_related("throughput")[:limit])


# --- routing (called on every turn) ---------------------------------------------------------------


def routable_arn(*, now: datetime, purpose: str = Purpose.CHAT) -> str | None:
    """The ARN to send turns to: only an in-service model, only while capacity is wanted."""
    arn = (ProvisionedThroughput.objects.filter(purpose=purpose, status=ThroughputStatus.IN_SERVICE)
           .exclude(arn="").values_list("arn", flat=True).first())
    if arn is None or not capacity_wanted(now=now):
        return None
    return arn


def provisioned_route() -> Route | None:
    """Route("provisioned", arn) while the provisioned model is InService and wanted, else None.

    The orchestrator calls this at the start of every turn (sync, from a thread), so the answer
    is cached for PROVISIONED_ROUTE_CACHE_SECONDS, and any error means None: a broken cache or
    database must never cost a customer the on-demand answer.
    """
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return None
    try:
        cached = cache.get(ROUTE_CACHE_KEY)
        if cached is None:
            cached = routable_arn(now=timezone.now()) or ""
            if settings.PROVISIONED_ROUTE_CACHE_SECONDS > 0:
                cache.set(ROUTE_CACHE_KEY, cached, settings.PROVISIONED_ROUTE_CACHE_SECONDS)
        return Route(ROUTE_NAME, cached) if cached else None
    except Exception:  # noqa: BLE001 - routing falls back to on-demand; never fail a turn here
        logger.warning("provisioned route unavailable, using on-demand", exc_info=True)
        return None


# --- the latency alarm ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencySample:
    p95_ms: float | None
    samples: int


def first_token_p95(*, since: datetime, until: datetime) -> LatencySample:
    """First-token p95 (nearest rank) of the answers recorded in (since, until], every process's.

    Pre-generated answers are left out: their first token says nothing about the model's load.
    """
    from chat.models import TurnRecord

    rows = TurnRecord.objects.filter(created_at__gt=since, created_at__lte=until,
                                     first_token_ms__isnull=False, speculative=False)
    samples = rows.count()
    if samples == 0:
        return LatencySample(None, 0)
    rank = math.ceil(0.95 * samples)
    p95 = rows.order_by("first_token_ms").values_list("first_token_ms", flat=True)[rank - 1]
    return LatencySample(p95, samples)


def tokyo_day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """[00:00, next 00:00) of `now`'s day in Tokyo: the alarm cap and the cost estimate count per day."""
    day = now.astimezone(schedule.SCHEDULE_TIMEZONE).date()
    start = datetime.combine(day, time(0), tzinfo=schedule.SCHEDULE_TIMEZONE)
    return start, start + timedelta(days=1)


def alarm_seconds_granted(*, now: datetime) -> float:
    """Seconds of alarm windows (granted, including their future part) inside `now`'s Tokyo day."""
    day_start, day_end = tokyo_day_bounds(now)
    windows = CapacityWindow.objects.filter(kind=WindowKind.ALARM, starts_at__lt=day_end, ends_at__gt=day_start)
    return sum(max(0.0, (min(w.ends_at, day_end) - max(w.starts_at, day_start)).total_seconds()) for w in windows)


# --- cost ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimate:
    day: date
    model_unit_hours: float
    usd: float
    projected_usd: float  # if what runs now keeps running as planned until the day ends
    hourly_price_usd: float


def cost_estimate(*, now: datetime) -> CostEstimate:
    """Today's (Tokyo) cost: model units x hours x PROVISIONED_HOURLY_PRICE_USD.

    Counted from the create call (AWS may start billing a little later) to the delete, with the
    time still running counted up to `now`; the projection adds what the plan keeps running.
    """
    day_start, day_end = tokyo_day_bounds(now)
    rows = (ProvisionedThroughput.objects.exclude(arn="")
            .filter(requested_at__lt=day_end).filter(Q(ended_at__isnull=True) | Q(ended_at__gt=day_start)))
    unit_seconds = 0.0
    projected_seconds = 0.0
    plan: CapacityPlan | None = None
    for row in rows:
        start = max(row.requested_at, day_start)
        end = min(row.ended_at or now, day_end, now)
        unit_seconds += max(0.0, (end - start).total_seconds()) * row.model_units
        if row.ended_at is None:
            if row.committed_at(now):
                until = day_end  # a committed term bills all day, wanted or not
            else:
                plan = plan or capacity_plan(now=now)
                until = plan.until if plan.wanted and plan.until is not None else now
            projected_seconds += max(0.0, (min(until, day_end) - now).total_seconds()) * row.model_units
    price = settings.PROVISIONED_HOURLY_PRICE_USD
    unit_hours = unit_seconds / 3600
    projected_hours = projected_seconds / 3600
    return CostEstimate(day=day_start.date(), model_unit_hours=round(unit_hours, 3), usd=round(unit_hours * price, 2),
                        projected_usd=round((unit_hours + projected_hours) * price, 2), hourly_price_usd=price)


def throughput_state(*, now: datetime | None = None) -> dict[str, object]:
    """What the PM dashboard shows: enabled or not, the current model's state, routing, today's cost."""
    from django.utils import timezone

    now = now or timezone.now()
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return {"enabled": False, "routing": "on-demand (provisioned throughput is off)"}
    active = throughput_active()
    cost = cost_estimate(now=now)
    failure = throughput_last_failure()
    return {
        "enabled": True,
        "state": active.get_status_display() if active else "none",
        "model units": active.model_units if active else None,
        "routing": "provisioned" if routable_arn(now=now) else "on-demand",
        "capacity wanted now": capacity_wanted(now=now),
        "cost today (USD)": f"{cost.usd:,.2f} (projected {cost.projected_usd:,.2f})",
        "last failure": f"{failure.requested_at:%Y-%m-%d %H:%M} {failure.get_status_display()}" if failure else None,
    }
