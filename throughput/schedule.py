"""Every beat entry of the project, in one place, as crontabs in Asia/Tokyo (DESIGN.md §8).

`schedule_install()` writes them into django-celery-beat's tables; `migrate` runs it (a
post_migrate receiver in apps.py), so a new database starts with the schedule. After that the
admin owns the timing: an operator who moves the scale-up to 08:00 in django-celery-beat's
admin keeps that change across deployments, and routing and reconciliation follow the edited
crontab (throughput.selectors.peak_state), so the schedule and the rules never disagree.
`schedule_install(overwrite_timing=True)` puts the settings' hours back.
"""

from __future__ import annotations

from prefetch.schedule import PREFETCH_BEAT_ENTRIES

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab as Crontab
from django.conf import settings

logger = logging.getLogger(__name__)

SCHEDULE_TIMEZONE = ZoneInfo("Asia/Tokyo")

SCALE_UP = "throughput: scale up at peak start"
SCALE_DOWN = "throughput: scale down at peak end"
RECONCILE = "throughput: reconcile"
REFRESH = "throughput: follow creations"
ALARM_CHECK = "throughput: latency alarm"
PRUNE_RECORDS = "chat: prune turn records"

# How far back (and forward) a crontab is searched for its previous (next) run: a week covers
# day-of-week schedules; a crontab that runs less often than weekly counts as "has not run".
_SEARCH_DAYS = 8


@dataclass(frozen=True)
class BeatEntry:
    name: str
    task: str
    minute: str
    hour: str
    expire_seconds: int
    description: str


def beat_entries() -> list[BeatEntry]:
    """The project's beat entries (built from settings each time: tests change them)."""
    reconcile_every = settings.PROVISIONED_RECONCILE_MINUTES
    return [
        # 09:00 JST: peak traffic starts. Creation takes minutes; routing follows InService.
        BeatEntry(SCALE_UP, "throughput.scale_up", "0", str(settings.PEAK_START_HOUR), 30 * 60,
                  "Buy provisioned throughput for peak hours (Asia/Tokyo). Moving this entry moves the peak."),
        # 23:00 JST: peak ends. The hourly price only stops once the model is deleted.
        BeatEntry(SCALE_DOWN, "throughput.scale_down", "0", str(settings.PEAK_END_HOUR), 30 * 60,
                  "Stop routing to provisioned throughput, drain, delete it. Moving this entry moves the peak."),
        # Every few minutes: converge to the wanted state, delete leaks, finish interrupted drains.
        BeatEntry(RECONCILE, "throughput.reconcile", f"*/{reconcile_every}", "*", reconcile_every * 60,
                  "Delete any provisioned throughput with our name prefix that should not exist; "
                  "retry a missing one in peak hours."),
        # Every minute: notice InService (routing switches) or a failed or stuck creation.
        BeatEntry(REFRESH, "throughput.refresh", "*", "*", 60,
                  "Poll provisioned throughput that is being created (no call when there is none)."),
        # Every minute: first-token p95 over the last minutes against the alarm threshold (DESIGN.md §6).
        BeatEntry(ALARM_CHECK, "throughput.alarm_check", "*", "*", 60,
                  "Buy capacity off-peak when first-token p95 is over the threshold, within the daily cap."),
        # 03:30 JST daily: drop per-turn latency records past TURN_RECORD_RETENTION_DAYS (quiet hour).
        BeatEntry(PRUNE_RECORDS, "chat.turn_records_prune", "30", "3", 60 * 60,
                  "Delete per-turn latency records older than the retention window (TURN_RECORD_RETENTION_DAYS)."),
        # 04:00 JST daily: relearn prefetch transition probabilities (prefetch/schedule.py says why).
        *(BeatEntry(**entry) for entry in PREFETCH_BEAT_ENTRIES),  # type: ignore[arg-type]
    ]


def schedule_install(*, overwrite_timing: bool = False, using: str = "default") -> list[Any]:
    """Create the missing beat entries; refresh the code-owned fields of the others.

    The task, its arguments, its expiry and the description belong to the code; the crontab and
    the enabled flag belong to whoever edits them in the admin, unless `overwrite_timing`.
    """
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    installed = []
    for entry in beat_entries():
        crontab = (CrontabSchedule.objects.using(using)
                   .filter(minute=entry.minute, hour=entry.hour, day_of_month="*", month_of_year="*",
                           day_of_week="*", timezone=SCHEDULE_TIMEZONE).order_by("id").first())
        if crontab is None:
            crontab = CrontabSchedule.objects.using(using).create(
                minute=entry.minute, hour=entry.hour, day_of_month="*", month_of_year="*", day_of_week="*",
                timezone=SCHEDULE_TIMEZONE)
        code_owned = {
            "task": entry.task,
            "kwargs": json.dumps({"actor": f"beat:{entry.name}"}),
            "expire_seconds": entry.expire_seconds,
            "description": entry.description,
        }
        task = PeriodicTask.objects.using(using).filter(name=entry.name).select_related("crontab").first()
        if task is None:
            task = PeriodicTask(name=entry.name, crontab=crontab, enabled=True, **code_owned)
            task.save(using=using)
            logger.info("installed beat entry %r", entry.name)
        else:
            changed = {field: value for field, value in code_owned.items() if getattr(task, field) != value}
            if overwrite_timing and (task.crontab_id != crontab.id or not task.enabled):
                changed.update(crontab=crontab, enabled=True, interval=None, solar=None, clocked=None)
            if changed:
                for field, value in changed.items():
                    setattr(task, field, value)
                task.save(using=using)  # save() tells the running beat that the schedule changed
                logger.info("updated beat entry %r: %s", entry.name, ", ".join(sorted(changed)))
        installed.append(task)
    return installed


def _runs_on(schedule: Crontab, day: date) -> bool:
    # Celery numbers weekdays from Sunday = 0.
    return (day.month in schedule.month_of_year and day.day in schedule.day_of_month
            and day.isoweekday() % 7 in schedule.day_of_week)


def crontab_previous_run(schedule: Crontab, *, now: datetime, tz: tzinfo) -> datetime | None:
    """The latest time at or before `now` at which `schedule` (read in `tz`) runs."""
    local = now.astimezone(tz)
    for days_back in range(_SEARCH_DAYS):
        day = local.date() - timedelta(days=days_back)
        if not _runs_on(schedule, day):
            continue
        for hour in sorted(schedule.hour, reverse=True):
            for minute in sorted(schedule.minute, reverse=True):
                candidate = datetime.combine(day, time(hour, minute), tzinfo=tz)
                if candidate <= local:
                    return candidate
    return None


def crontab_next_run(schedule: Crontab, *, now: datetime, tz: tzinfo) -> datetime | None:
    """The first time after `now` at which `schedule` (read in `tz`) runs."""
    local = now.astimezone(tz)
    for days_ahead in range(_SEARCH_DAYS):
        day = local.date() + timedelta(days=days_ahead)
        if not _runs_on(schedule, day):
            continue
        for hour in sorted(schedule.hour):
            for minute in sorted(schedule.minute):
                candidate = datetime.combine(day, time(hour, minute), tzinfo=tz)
                if candidate > local:
                    return candidate
    return None
