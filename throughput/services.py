"""Writes for provisioned throughput: scale up, scale down, follow creations, reconcile, the alarm.

Each entry point moves toward `selectors.capacity_plan` in one direction: scale-up buys only
while capacity is wanted, scale-down deletes only while it is not, reconciliation does both
and deletes leaks. So a late beat delivery, a second worker or an operator's earlier decision
can never make them fight. Every decision and every control-plane call leaves a ThroughputAction.

Concurrency: a row is claimed (committed) before the create call, and a partial unique
constraint allows one active row per purpose, so a second beat, worker or operator finds the
first one's row instead of buying again (SQLite serializes writers; PostgreSQL rejects the
second insert). No database lock is held across a control-plane call: on SQLite it would stop
every chat write meanwhile. Status changes are compare-and-set updates.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction

from . import manager, selectors
from .models import (
    ACTIVE_STATUSES,
    Action,
    CapacityWindow,
    ProvisionedThroughput,
    Purpose,
    Result,
    ThroughputAction,
    ThroughputStatus,
    Trigger,
    WindowKind,
)
from .schedule import SCHEDULE_TIMEZONE

logger = logging.getLogger(__name__)

NOT_ENABLED = "PROVISIONED_THROUGHPUT_ENABLED is off"
# A create call may still be in flight this long after its row was claimed (3 attempts of a
# 30 s read timeout, plus backoff); only after it is a silent row resolved by name.
REQUESTED_GRACE = timedelta(minutes=3)
# An alarm grant shorter than this buys an hour's bill for less than a creation takes.
ALARM_MIN_GRANT = timedelta(minutes=10)

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Outcome:
    """What a service did: the task's return value and the admin's message."""

    result: str
    detail: str
    throughput: ProvisionedThroughput | None = None


def jst(moment: datetime) -> str:
    return moment.astimezone(SCHEDULE_TIMEZONE).strftime("%Y-%m-%d %H:%M JST")


def action_record(*, now: datetime, actor: str, action: str, result: str, detail: str = "",
                  throughput: ProvisionedThroughput | None = None, arn: str = "") -> ThroughputAction:
    """One line of history; failures are logged too (the admin is not the only place people look)."""
    if result in (Result.FAILED, Result.REPORTED):
        logger.warning("provisioned throughput %s %s by %s: %s", action, result, actor, detail)
    else:
        logger.info("provisioned throughput %s %s by %s: %s", action, result, actor, detail)
    return ThroughputAction.objects.create(created_at=now, actor=actor[:150], action=action, result=result,
                                           detail=detail, throughput=throughput,
                                           arn=arn or (throughput.arn if throughput else ""))


def _routing_changed() -> None:
    """Drop the cached routing answer so this process sees the change at once (others within the TTL)."""
    try:
        cache.delete(selectors.ROUTE_CACHE_KEY)
    except Exception:  # noqa: BLE001 - the drain before a delete covers a cache that did not answer
        logger.warning("could not clear the cached provisioned route", exc_info=True)


def _transition(row: ProvisionedThroughput, *, from_: Iterable[str], to: str, **fields: object) -> bool:
    """Compare-and-set: move `row` to `to` only if it is still in one of `from_` (False: someone else moved it)."""
    updated = ProvisionedThroughput.objects.filter(pk=row.pk, status__in=list(from_)).update(status=to, **fields)
    if updated:
        row.status = to
        for name, value in fields.items():
            setattr(row, name, value)
    return bool(updated)


def throughput_name(*, purpose: str, now: datetime, token: str) -> str:
    """A recognisable, unique provisionedModelName: prefix, purpose, Tokyo time, token."""
    local = now.astimezone(SCHEDULE_TIMEZONE)
    return f"{settings.PROVISIONED_NAME_PREFIX}{purpose}-{local:%Y%m%d-%H%M}-{token[:8]}"


# --- scale up ----------------------------------------------------------------------------------------


def throughput_scale_up(*, now: datetime, actor: str, trigger: str = Trigger.SCHEDULE,
                        purpose: str = Purpose.CHAT) -> Outcome:
    """Buy capacity if it is wanted now and none is active; safe to run twice, or twice at once."""
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return Outcome(Result.SKIPPED, NOT_ENABLED)
    plan = selectors.capacity_plan(now=now)
    if not plan.wanted:
        detail = f"not wanted at {jst(now)}: {plan.reason}"
        action_record(now=now, actor=actor, action=Action.SCALE_UP, result=Result.SKIPPED, detail=detail)
        return Outcome(Result.SKIPPED, detail)
    return _throughput_create(now=now, actor=actor, trigger=trigger, purpose=purpose, why=plan.reason)


def _throughput_create(*, now: datetime, actor: str, trigger: str, purpose: str, why: str) -> Outcome:
    token = uuid.uuid4().hex
    row: ProvisionedThroughput | None = None
    try:
        with transaction.atomic():
            if not ProvisionedThroughput.objects.filter(purpose=purpose, status__in=ACTIVE_STATUSES).exists():
                row = ProvisionedThroughput.objects.create(
                    purpose=purpose, name=throughput_name(purpose=purpose, now=now, token=token),
                    client_request_token=token, model_id=settings.PROVISIONED_MODEL_ID,
                    model_units=settings.PROVISIONED_MODEL_UNITS, commitment=settings.PROVISIONED_COMMITMENT,
                    status=ThroughputStatus.REQUESTED, trigger=trigger, requested_by=actor[:150], requested_at=now)
    except IntegrityError:
        row = None  # another worker claimed the purpose between our check and our insert
    if row is None:
        active = selectors.throughput_active(purpose=purpose)
        detail = (f"{active.name} is already {active.get_status_display().lower()}" if active
                  else "another worker claimed it at the same moment")
        action_record(now=now, actor=actor, action=Action.SCALE_UP, result=Result.SKIPPED, detail=detail,
                      throughput=active)
        return Outcome(Result.SKIPPED, detail, active)
    return _create_call(row, now=now, actor=actor, why=why)


def _create_call(row: ProvisionedThroughput, *, now: datetime, actor: str, why: str) -> Outcome:
    """The create call for a claimed row (again with the same token after a lost answer)."""
    try:
        arn = manager.provisioned_model_create(
            name=row.name, model_id=row.model_id, model_units=row.model_units, commitment=row.commitment,
            client_request_token=row.client_request_token, purpose=row.purpose)
    except manager.ControlPlaneError as exc:
        if exc.may_have_succeeded:
            detail = f"{row.name}: {exc.code}: {exc}; AWS may have created it: looked up by name on the next poll"
            action_record(now=now, actor=actor, action=Action.CREATE, result=Result.FAILED, detail=detail,
                          throughput=row)
            return Outcome(Result.FAILED, detail, row)
        _transition(row, from_=[ThroughputStatus.REQUESTED], to=ThroughputStatus.FAILED, ended_at=now,
                    failure_message=f"{exc.code}: {exc}")
        detail = f"{row.name}: {exc.code}: {exc}; routing stays on-demand"
        action_record(now=now, actor=actor, action=Action.CREATE, result=Result.FAILED, detail=detail, throughput=row)
        return Outcome(Result.FAILED, detail, row)
    if not _transition(row, from_=[ThroughputStatus.REQUESTED], to=ThroughputStatus.CREATING, arn=arn,
                       last_checked_at=now):
        row.refresh_from_db()
        if row.status in ACTIVE_STATUSES and row.arn == arn:
            return Outcome(Result.SKIPPED, f"{row.name} was recorded by another worker", row)
        # Scaled down while the call was in flight: what it bought goes at once.
        action_record(now=now, actor=actor, action=Action.CREATE, result=Result.OK, arn=arn, throughput=row,
                      detail=f"{row.name} created after it was no longer wanted ({row.get_status_display()}): deleting")
        return _arn_delete(arn, now=now, actor=actor, throughput=row)
    commitment = row.commitment or "no commitment (hourly)"
    detail = f"{row.name}: {row.model_units} model unit(s) of {row.model_id}, {commitment}; {why}"
    action_record(now=now, actor=actor, action=Action.CREATE, result=Result.OK, detail=detail, throughput=row)
    return Outcome(Result.OK, f"creating {row.name}", row)


# --- following creations --------------------------------------------------------------------------------


def throughput_refresh(*, now: datetime, actor: str) -> list[Outcome]:
    """Follow models on their way up: InService (routing switches), Failed, stuck, or a lost create answer.

    No control-plane call when nothing is being created, so it can run every minute.
    """
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return []
    outcomes = [_requested_resolve(row, now=now, actor=actor) for row in ProvisionedThroughput.objects.filter(
        status=ThroughputStatus.REQUESTED, requested_at__lte=now - REQUESTED_GRACE)]
    outcomes += [_creating_poll(row, now=now, actor=actor)
                 for row in ProvisionedThroughput.objects.filter(status=ThroughputStatus.CREATING)]
    return [outcome for outcome in outcomes if outcome is not None]


def _timed_out(row: ProvisionedThroughput, now: datetime) -> bool:
    return now - row.requested_at >= timedelta(minutes=settings.PROVISIONED_CREATE_TIMEOUT_MINUTES)


def _requested_resolve(row: ProvisionedThroughput, *, now: datetime, actor: str) -> Outcome:
    """A claimed row whose create call never answered: find the model by name, or ask again (same token)."""
    try:
        found = [m for m in manager.provisioned_models_list(name_prefix=row.name) if m.name == row.name]
    except manager.ControlPlaneError as exc:
        detail = f"{row.name}: could not look it up: {exc.code}: {exc}"
        action_record(now=now, actor=actor, action=Action.STATUS, result=Result.FAILED, detail=detail, throughput=row)
        return Outcome(Result.FAILED, detail, row)
    if found:
        if _transition(row, from_=[ThroughputStatus.REQUESTED], to=ThroughputStatus.CREATING, arn=found[0].arn,
                       last_checked_at=now):
            detail = f"{row.name}: found by name ({found[0].status}) after its create call lost its answer"
            action_record(now=now, actor=actor, action=Action.STATUS, result=Result.OK, detail=detail, throughput=row)
            return Outcome(Result.OK, detail, row)
        return Outcome(Result.SKIPPED, f"{row.name} moved on meanwhile", row)
    if _timed_out(row, now):
        _transition(row, from_=[ThroughputStatus.REQUESTED], to=ThroughputStatus.FAILED, ended_at=now,
                    failure_message="the create call never answered and no model has its name")
        detail = f"{row.name}: never created; given up"
        action_record(now=now, actor=actor, action=Action.STATUS, result=Result.FAILED, detail=detail, throughput=row)
        return Outcome(Result.FAILED, detail, row)
    return _create_call(row, now=now, actor=actor, why="retried after a lost answer (same request token)")


def _creating_poll(row: ProvisionedThroughput, *, now: datetime, actor: str) -> Outcome | None:
    try:
        model = manager.provisioned_model_get(provisioned_model_id=row.arn)
    except manager.ProvisionedModelNotFound:
        _transition(row, from_=[ThroughputStatus.CREATING], to=ThroughputStatus.FAILED, ended_at=now,
                    failure_message="disappeared while creating")
        detail = f"{row.name}: disappeared while creating"
        action_record(now=now, actor=actor, action=Action.STATUS, result=Result.FAILED, detail=detail, throughput=row)
        return Outcome(Result.FAILED, detail, row)
    except manager.ControlPlaneError as exc:
        # Not an action: the next poll asks again (a history row a minute during an outage says nothing).
        logger.warning("could not poll %s: %s: %s", row.name, exc.code, exc)
        return None
    if model.status == manager.IN_SERVICE:
        if not _transition(row, from_=[ThroughputStatus.CREATING], to=ThroughputStatus.IN_SERVICE, in_service_at=now,
                           last_checked_at=now, commitment_expires_at=model.commitment_expires_at):
            return None
        _routing_changed()
        minutes = (now - row.requested_at).total_seconds() / 60
        plan = selectors.capacity_plan(now=now)
        routed = f"turns go to it ({plan.reason})" if plan.wanted else f"not routed now ({plan.reason})"
        detail = f"{row.name}: InService after {minutes:.0f} min; {routed}"
        action_record(now=now, actor=actor, action=Action.STATUS, result=Result.OK, detail=detail, throughput=row)
        return Outcome(Result.OK, detail, row)
    if model.status == manager.FAILED or _timed_out(row, now):
        reason = (f"Failed: {model.failure_message or 'no reason given'}" if model.status == manager.FAILED
                  else f"still {model.status} after {settings.PROVISIONED_CREATE_TIMEOUT_MINUTES} min: given up")
        if not _transition(row, from_=[ThroughputStatus.CREATING], to=ThroughputStatus.FAILED, ended_at=now,
                           failure_message=reason):
            return None
        action_record(now=now, actor=actor, action=Action.STATUS, result=Result.FAILED,
                      detail=f"{row.name}: {reason}; routing stays on-demand", throughput=row)
        # It still exists (and may bill): delete it now; the leak sweep retries if this fails.
        return _arn_delete(row.arn, now=now, actor=actor, throughput=row)
    ProvisionedThroughput.objects.filter(pk=row.pk).update(last_checked_at=now)
    return None


# --- scale down --------------------------------------------------------------------------------------------


def throughput_scale_down(*, now: datetime, actor: str, purpose: str = Purpose.CHAT,
                          sleep: Sleep = time.sleep) -> Outcome:
    """Stop routing to the capacity, let answers in flight finish, delete it; unless it is still wanted."""
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return Outcome(Result.SKIPPED, NOT_ENABLED)
    plan = selectors.capacity_plan(now=now)
    if plan.wanted:
        until = f" until {jst(plan.until)}" if plan.until else ""
        detail = f"still wanted: {plan.reason}{until}"
        action_record(now=now, actor=actor, action=Action.SCALE_DOWN, result=Result.SKIPPED, detail=detail)
        return Outcome(Result.SKIPPED, detail)
    row = selectors.throughput_active(purpose=purpose)
    if row is None:
        action_record(now=now, actor=actor, action=Action.SCALE_DOWN, result=Result.SKIPPED,
                      detail="no provisioned throughput to scale down")
        return Outcome(Result.SKIPPED, "no provisioned throughput to scale down")
    return _throughput_retire(row, now=now, actor=actor, sleep=sleep)


def _throughput_retire(row: ProvisionedThroughput, *, now: datetime, actor: str, sleep: Sleep) -> Outcome:
    if row.committed_at(now):
        return _committed_report(arn=row.arn, name=row.name, commitment=row.commitment,
                                 expires_at=row.commitment_expires_at, now=now, actor=actor, throughput=row)
    if row.status == ThroughputStatus.DRAINING:
        drained_at = (row.draining_since or now) + timedelta(seconds=settings.PROVISIONED_DRAIN_SECONDS)
        if drained_at > now:
            return Outcome(Result.SKIPPED, f"{row.name} is being drained", row)
        return _throughput_delete(row, now=now, actor=actor)
    was_routable = row.status == ThroughputStatus.IN_SERVICE
    if not _transition(row, from_=[ThroughputStatus.REQUESTED, ThroughputStatus.CREATING, ThroughputStatus.IN_SERVICE],
                       to=ThroughputStatus.DRAINING, draining_since=now):
        return Outcome(Result.SKIPPED, f"{row.name} was scaled down by someone else", row)
    _routing_changed()
    drain = settings.PROVISIONED_DRAIN_SECONDS if was_routable else 0
    action_record(now=now, actor=actor, action=Action.SCALE_DOWN, result=Result.OK, throughput=row,
                  detail=f"{row.name}: routing stopped; deleting after a {drain:.0f} s drain")
    if drain > 0:
        # Every process's cached route expires meanwhile, and answers in flight finish.
        sleep(drain)
    return _throughput_delete(row, now=now, actor=actor)


def _throughput_delete(row: ProvisionedThroughput, *, now: datetime, actor: str) -> Outcome:
    if not row.arn:
        _transition(row, from_=ACTIVE_STATUSES, to=ThroughputStatus.FAILED, ended_at=now,
                    failure_message="scaled down before the create call answered")
        detail = f"{row.name}: scaled down before AWS answered the create call (a late model is deleted as a leak)"
        action_record(now=now, actor=actor, action=Action.DELETE, result=Result.OK, detail=detail, throughput=row)
        return Outcome(Result.OK, detail, row)
    try:
        existed = manager.provisioned_model_delete(provisioned_model_id=row.arn)
    except manager.ControlPlaneError as exc:
        detail = f"{row.name}: {exc.code}: {exc}; reconciliation tries again"
        action_record(now=now, actor=actor, action=Action.DELETE, result=Result.FAILED, detail=detail, throughput=row)
        return Outcome(Result.FAILED, detail, row)
    _transition(row, from_=ACTIVE_STATUSES, to=ThroughputStatus.DELETED, ended_at=now)
    detail = f"{row.name}: deleted" if existed else f"{row.name}: was already gone"
    action_record(now=now, actor=actor, action=Action.DELETE, result=Result.OK, detail=detail, throughput=row)
    return Outcome(Result.OK, detail, row)


def _arn_delete(arn: str, *, now: datetime, actor: str, throughput: ProvisionedThroughput | None) -> Outcome:
    """Delete a model no row is active for (failed, stuck, late); its row is already closed."""
    try:
        manager.provisioned_model_delete(provisioned_model_id=arn)
    except manager.ControlPlaneError as exc:
        detail = f"{arn}: {exc.code}: {exc}; the leak sweep tries again"
        action_record(now=now, actor=actor, action=Action.DELETE, result=Result.FAILED, detail=detail,
                      throughput=throughput, arn=arn)
        return Outcome(Result.FAILED, detail, throughput)
    action_record(now=now, actor=actor, action=Action.DELETE, result=Result.OK, detail=f"{arn}: deleted",
                  throughput=throughput, arn=arn)
    return Outcome(Result.OK, f"{arn}: deleted", throughput)


def _committed_report(*, arn: str, name: str, commitment: str, expires_at: datetime | None, now: datetime,
                      actor: str, throughput: ProvisionedThroughput | None = None) -> Outcome:
    """A committed term cannot be deleted early: say so once a (Tokyo) day, never try."""
    until = jst(expires_at) if expires_at else "an unknown date"
    detail = f"{name}: {commitment} commitment until {until} cannot be deleted early; kept (it bills all day)"
    day_start, _ = selectors.tokyo_day_bounds(now)
    if not ThroughputAction.objects.filter(action=Action.COMMITTED, arn=arn, created_at__gte=day_start).exists():
        action_record(now=now, actor=actor, action=Action.COMMITTED, result=Result.REPORTED, detail=detail,
                      throughput=throughput, arn=arn)
    return Outcome(Result.REPORTED, detail, throughput)


# --- reconciliation ------------------------------------------------------------------------------------


def throughput_reconcile(*, now: datetime, actor: str, purpose: str = Purpose.CHAT,
                         sleep: Sleep = time.sleep) -> list[Outcome]:
    """Make AWS match the plan: follow creations, finish drains, scale to the plan, delete leaks.

    A leak is any provisioned model whose name has our prefix and that no active row tracks
    (a crashed worker's, a failed one, one created by hand with our prefix); committed terms are
    reported, not deleted.
    """
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return []
    outcomes = throughput_refresh(now=now, actor=actor)
    outcomes += _in_service_verify(now=now, actor=actor)
    drained_before = now - timedelta(seconds=settings.PROVISIONED_DRAIN_SECONDS)
    for row in ProvisionedThroughput.objects.filter(status=ThroughputStatus.DRAINING, draining_since__lte=drained_before):
        outcomes.append(_throughput_delete(row, now=now, actor=actor))  # a worker died mid-drain
    plan = selectors.capacity_plan(now=now)
    active = selectors.throughput_active(purpose=purpose)
    if not plan.wanted and active is not None and active.status != ThroughputStatus.DRAINING:
        outcomes.append(_throughput_retire(active, now=now, actor=actor, sleep=sleep))
    elif plan.wanted and active is None:
        outcomes.append(_missing_create(now=now, actor=actor, purpose=purpose, why=plan.reason))
    outcomes += _leaks_sweep(now=now, actor=actor)
    return outcomes


def _retry_from(*, now: datetime, purpose: str) -> tuple[ProvisionedThroughput, datetime] | None:
    """The last failure and when the next automatic attempt may start, while that is still ahead."""
    failure = selectors.throughput_last_failure(purpose=purpose)
    if failure is None or failure.ended_at is None:
        return None
    retry_at = failure.ended_at + timedelta(minutes=settings.PROVISIONED_RETRY_AFTER_MINUTES)
    return (failure, retry_at) if now < retry_at else None


def _missing_create(*, now: datetime, actor: str, purpose: str, why: str) -> Outcome:
    """Capacity is wanted and missing (a missed beat, a failure): try again, but not in a tight loop."""
    waiting = _retry_from(now=now, purpose=purpose)
    if waiting is not None:
        failure, retry_at = waiting
        detail = (f"wanted ({why}) but {failure.name} failed at {jst(failure.ended_at or now)}; "
                  f"next attempt from {jst(retry_at)}")
        action_record(now=now, actor=actor, action=Action.SCALE_UP, result=Result.SKIPPED, detail=detail)
        return Outcome(Result.SKIPPED, detail)
    return _throughput_create(now=now, actor=actor, trigger=Trigger.RECONCILE, purpose=purpose, why=why)


def _alarm_scale_up(*, now: datetime, actor: str, purpose: str) -> None:
    """The alarm asks every minute: buy only when nothing is active and no failure is being waited out."""
    if selectors.throughput_active(purpose=purpose) is None and _retry_from(now=now, purpose=purpose) is None:
        throughput_scale_up(now=now, actor=actor, trigger=Trigger.ALARM, purpose=purpose)


def _in_service_verify(*, now: datetime, actor: str) -> list[Outcome]:
    """A model deleted outside MangaAssist must stop receiving turns."""
    outcomes = []
    for row in ProvisionedThroughput.objects.filter(status=ThroughputStatus.IN_SERVICE):
        try:
            manager.provisioned_model_get(provisioned_model_id=row.arn)
        except manager.ProvisionedModelNotFound:
            if _transition(row, from_=[ThroughputStatus.IN_SERVICE], to=ThroughputStatus.DELETED, ended_at=now):
                _routing_changed()
                detail = f"{row.name}: deleted outside MangaAssist; routing back on on-demand"
                action_record(now=now, actor=actor, action=Action.STATUS, result=Result.FAILED, detail=detail,
                              throughput=row)
                outcomes.append(Outcome(Result.FAILED, detail, row))
        except manager.ControlPlaneError as exc:
            # Unknown is not gone: keep routing; the next run asks again.
            logger.warning("could not check %s: %s: %s", row.name, exc.code, exc)
            continue
        else:
            ProvisionedThroughput.objects.filter(pk=row.pk).update(last_checked_at=now)
    return outcomes


def _leaks_sweep(*, now: datetime, actor: str) -> list[Outcome]:
    try:
        models = manager.provisioned_models_list(name_prefix=settings.PROVISIONED_NAME_PREFIX)
    except manager.ControlPlaneError as exc:
        detail = f"could not list provisioned models: {exc.code}: {exc}"
        action_record(now=now, actor=actor, action=Action.LEAK, result=Result.FAILED, detail=detail)
        return [Outcome(Result.FAILED, detail)]
    # Read after listing: a row is committed before its create call, so any model in the list
    # that a worker is creating right now is already tracked here.
    tracked = set(ProvisionedThroughput.objects.filter(status__in=ACTIVE_STATUSES).values_list("name", flat=True))
    outcomes = []
    for model in models:
        if model.name in tracked:
            continue
        row = ProvisionedThroughput.objects.filter(name=model.name).first()
        if model.committed_at(now):
            outcomes.append(_committed_report(arn=model.arn, name=model.name, commitment=model.commitment,
                                              expires_at=model.commitment_expires_at, now=now, actor=actor,
                                              throughput=row))
            continue
        try:
            manager.provisioned_model_delete(provisioned_model_id=model.arn)
        except manager.ControlPlaneError as exc:
            detail = f"{model.name} ({model.status}) should not exist: delete failed: {exc.code}: {exc}"
            action_record(now=now, actor=actor, action=Action.LEAK, result=Result.FAILED, detail=detail,
                          throughput=row, arn=model.arn)
            outcomes.append(Outcome(Result.FAILED, detail, row))
            continue
        if row is not None and row.ended_at is None:
            ProvisionedThroughput.objects.filter(pk=row.pk).update(ended_at=now)
        detail = (f"{model.name} ({model.status}, {model.model_units} model unit(s)) had our name prefix and "
                  f"no active row: deleted")
        action_record(now=now, actor=actor, action=Action.LEAK, result=Result.OK, detail=detail, throughput=row,
                      arn=model.arn)
        outcomes.append(Outcome(Result.OK, detail, row))
    return outcomes


# --- the latency alarm -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmOutcome:
    fired: bool
    sample: selectors.LatencySample
    detail: str


def alarm_check(*, now: datetime, actor: str = "alarm", purpose: str = Purpose.CHAT) -> AlarmOutcome:
    """First-token p95 over the last minutes above the threshold buys capacity, even off-peak.

    Off-peak it opens (or extends) an alarm window of PROVISIONED_ALARM_HOLD_MINUTES, counted
    against PROVISIONED_ALARM_MAX_HOURS_PER_DAY per Tokyo day; in peak hours it only makes sure
    capacity is coming. A window kept down by hand wins over the alarm.
    """
    lookback = timedelta(minutes=settings.PROVISIONED_ALARM_LOOKBACK_MINUTES)
    if not settings.PROVISIONED_THROUGHPUT_ENABLED:
        return AlarmOutcome(False, selectors.LatencySample(None, 0), NOT_ENABLED)
    sample = selectors.first_token_p95(since=now - lookback, until=now)
    threshold = settings.PROVISIONED_ALARM_P95_MS
    if sample.p95_ms is None or sample.samples < settings.PROVISIONED_ALARM_MIN_SAMPLES or sample.p95_ms <= threshold:
        return AlarmOutcome(False, sample, "quiet")
    summary = (f"first-token p95 {sample.p95_ms:.0f} ms over {sample.samples} answers in the last "
               f"{settings.PROVISIONED_ALARM_LOOKBACK_MINUTES} min (threshold {threshold:.0f} ms)")
    plan = selectors.capacity_plan(now=now)
    if plan.window is not None and plan.window.kind == WindowKind.MANUAL_OFF:
        if not ThroughputAction.objects.filter(action=Action.ALARM, created_at__gte=plan.window.starts_at).exists():
            action_record(now=now, actor=actor, action=Action.ALARM, result=Result.SKIPPED,
                          detail=f"{summary}; ignored: {plan.reason} until {jst(plan.window.ends_at)}")
        return AlarmOutcome(True, sample, "kept down by hand")
    if plan.peak.active or (plan.window is not None and plan.window.kind == WindowKind.MANUAL_ON):
        # Peak hours or kept up by hand: capacity is wanted anyway; no alarm budget is spent.
        _alarm_scale_up(now=now, actor=actor, purpose=purpose)
        return AlarmOutcome(True, sample, f"capacity already wanted ({plan.reason})")
    granted = _alarm_window_grant(now=now, actor=actor, summary=summary)
    if granted is None:
        return AlarmOutcome(True, sample, "daily alarm budget spent")
    _alarm_scale_up(now=now, actor=actor, purpose=purpose)
    return AlarmOutcome(True, sample, f"capacity wanted until {jst(granted.ends_at)}")


def _alarm_window_grant(*, now: datetime, actor: str, summary: str) -> CapacityWindow | None:
    """Open an alarm window, or extend the running one when half of it is spent, within today's cap."""
    hold = timedelta(minutes=settings.PROVISIONED_ALARM_HOLD_MINUTES)
    cap = timedelta(hours=settings.PROVISIONED_ALARM_MAX_HOURS_PER_DAY)
    with transaction.atomic():
        window = (CapacityWindow.objects.select_for_update()
                  .filter(kind=WindowKind.ALARM, starts_at__lte=now, ends_at__gt=now).order_by("-ends_at").first())
        remaining = cap - timedelta(seconds=selectors.alarm_seconds_granted(now=now))
        if window is not None:
            if window.ends_at - now > hold / 2:
                return window
            extension = min(now + hold - window.ends_at, remaining)
            if extension <= timedelta(0):
                return window  # the budget is spent: the window runs out as granted
            window.ends_at += extension
            window.save(update_fields=["ends_at"])
            action_record(now=now, actor=actor, action=Action.ALARM, result=Result.OK,
                          detail=f"{summary}; capacity wanted until {jst(window.ends_at)}")
            return window
        grant = min(hold, remaining)
        if grant < ALARM_MIN_GRANT:
            day_start, _ = selectors.tokyo_day_bounds(now)
            if not ThroughputAction.objects.filter(action=Action.ALARM_CAPPED, created_at__gte=day_start).exists():
                action_record(now=now, actor=actor, action=Action.ALARM_CAPPED, result=Result.SKIPPED,
                              detail=f"{summary}; not scaled up: daily cap of "
                                     f"{settings.PROVISIONED_ALARM_MAX_HOURS_PER_DAY:g} h reached")
            return None
        window = CapacityWindow.objects.create(kind=WindowKind.ALARM, starts_at=now, ends_at=now + grant,
                                               created_by=actor[:150], note=summary)
        used = cap - remaining + grant
        action_record(now=now, actor=actor, action=Action.ALARM, result=Result.OK,
                      detail=f"{summary}; capacity wanted until {jst(window.ends_at)} "
                             f"({used.total_seconds() / 3600:.2g} of {cap.total_seconds() / 3600:g} alarm hours today)")
    _routing_changed()
    return window


# --- by hand --------------------------------------------------------------------------------------------


def throughput_keep_up(*, now: datetime, actor: str, hours: float) -> CapacityWindow:
    """An operator wants capacity for `hours` from now, whatever the hour (ends a kept-down window).

    The caller queues the scale-up; this only records the decision, so reconciliation keeps it.
    """
    with transaction.atomic():
        CapacityWindow.objects.filter(kind=WindowKind.MANUAL_OFF, starts_at__lte=now, ends_at__gt=now).update(ends_at=now)
        window = CapacityWindow.objects.create(kind=WindowKind.MANUAL_ON, starts_at=now,
                                               ends_at=now + timedelta(hours=hours), created_by=actor[:150])
        action_record(now=now, actor=actor, action=Action.HOLD, result=Result.OK,
                      detail=f"capacity wanted until {jst(window.ends_at)} (then the schedule decides again)")
    _routing_changed()
    return window


def throughput_keep_down(*, now: datetime, actor: str) -> CapacityWindow:
    """An operator refuses capacity until the next scheduled scale-up (ends alarm and kept-up windows)."""
    peak = selectors.peak_state(now=now)
    until = peak.next_start if peak.next_start is not None and peak.next_start > now else now + timedelta(days=1)
    with transaction.atomic():
        CapacityWindow.objects.filter(kind__in=[WindowKind.MANUAL_ON, WindowKind.ALARM], starts_at__lte=now,
                                      ends_at__gt=now).update(ends_at=now)
        window = CapacityWindow.objects.create(kind=WindowKind.MANUAL_OFF, starts_at=now, ends_at=until,
                                               created_by=actor[:150])
        action_record(now=now, actor=actor, action=Action.HOLD, result=Result.OK,
                      detail=f"no capacity until {jst(until)} (the next scheduled scale-up); alarm ignored meanwhile")
    _routing_changed()
    return window
