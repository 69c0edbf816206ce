"""Celery tasks of provisioned throughput: thin, idempotent, each one service call at the current time.

Beat queues them (throughput.schedule); the admin queues scale-up/scale-down after recording
an operator's decision. Every service is safe to run twice or at once, and each task expires
so a backlog never replays a stale decision (the services re-check the plan anyway).
"""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from . import services
from .models import Trigger

# A locked or briefly unreachable database may answer next time; control-plane errors are
# recorded by the services and retried by the next reconciliation instead.
_RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True, "max_retries": 3, "acks_late": True}


@shared_task(name="throughput.scale_up", expires=30 * 60, **_RETRY)
def throughput_scale_up_task(actor: str = "beat", trigger: str = Trigger.SCHEDULE) -> str:
    """Buy provisioned throughput if it is wanted now (peak, alarm, by hand) and none is active."""
    return services.throughput_scale_up(now=timezone.now(), actor=actor, trigger=trigger).detail


@shared_task(name="throughput.scale_down", expires=30 * 60, **_RETRY)
def throughput_scale_down_task(actor: str = "beat") -> str:
    """Stop routing, drain, delete the provisioned throughput unless it is still wanted."""
    return services.throughput_scale_down(now=timezone.now(), actor=actor).detail


@shared_task(name="throughput.refresh", expires=60, **_RETRY)
def throughput_refresh_task(actor: str = "beat") -> int:
    """Follow creations; returns how many rows changed or failed."""
    return len(services.throughput_refresh(now=timezone.now(), actor=actor))


@shared_task(name="throughput.reconcile", expires=10 * 60, **_RETRY)
def throughput_reconcile_task(actor: str = "reconcile") -> int:
    """Make AWS match the plan and delete leaks; returns how many things it did or reported."""
    return len(services.throughput_reconcile(now=timezone.now(), actor=actor))


@shared_task(name="throughput.alarm_check", expires=60, **_RETRY)
def throughput_alarm_check_task(actor: str = "alarm") -> bool:
    """Compare first-token p95 with the alarm threshold; True when the alarm fired."""
    return services.alarm_check(now=timezone.now(), actor=actor).fired
