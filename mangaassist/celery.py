"""The Celery application, and the one function the web process uses to queue work.

Web code never calls `task.delay()` directly: `enqueue_on_commit` queues after the
transaction commits (a worker never sees an uncommitted row), runs the task on a
local thread pool in embedded mode, and never lets a broken broker reach the chat.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mangaassist.settings")

app = Celery("mangaassist")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@worker_init.connect
def _warm_up_before_the_pool_forks(**_: Any) -> None:
    """A worker's first speculation must not pay seconds of intent-model training and index
    building: the main process loads them before it forks, and every pool child inherits them."""
    from .warmup import warm_up

    warm_up(pool_connections=False, freeze=True)


_in_process_pool: ThreadPoolExecutor | None = None
_in_flight: set[Future] = set()
_in_flight_lock = threading.Lock()


def _forget(future: Future) -> None:
    with _in_flight_lock:
        _in_flight.discard(future)


def _pool() -> ThreadPoolExecutor:
    global _in_process_pool
    if _in_process_pool is None:
        _in_process_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mangaassist-task")
    return _in_process_pool


def _run_in_process(task: Any, args: tuple, kwargs: dict, expires_at: float) -> None:
    from django.db import close_old_connections

    from chat import metrics

    if time.monotonic() > expires_at:
        # Queued behind a busy pool past its expiry, as a worker would drop it: stale work (a prefetch
        # for a turn that came already) would only take CPU from the answers streaming beside it.
        metrics.TASKS_QUEUED.labels(task=task.name, result="expired").inc()
        return
    from chat.threads import background_defer_seconds, gate

    gate.wait_quiet(background_defer_seconds())  # after the turns being prepared now (chat.threads)
    try:
        task.apply(args=args, kwargs=kwargs, throw=True)
    except Exception:  # noqa: BLE001 - a background task must never take the web process down
        logger.exception("in-process task %s failed", task.name)
    finally:
        close_old_connections()


def enqueue(task: Any, *, args: tuple = (), kwargs: dict | None = None, expires: float | None = None) -> bool:
    """Queue `task` now. Returns False (and counts it) when it could not be queued."""
    from django.conf import settings

    from chat import metrics

    kwargs = kwargs or {}
    expires = expires if expires is not None else settings.CELERY_TASK_EXPIRES_SECONDS
    if settings.CELERY_TASKS_IN_PROCESS:
        future = _pool().submit(_run_in_process, task, args, kwargs, time.monotonic() + expires)
        with _in_flight_lock:
            _in_flight.add(future)
        future.add_done_callback(_forget)
        metrics.TASKS_QUEUED.labels(task=task.name, result="in_process").inc()
        return True
    try:
        task.apply_async(
            args=args,
            kwargs=kwargs,
            expires=expires,
            retry=False,
        )
    except Exception as exc:  # noqa: BLE001 - broker down: the answer is already out, skip the extra work
        logger.warning("could not queue %s: %s", task.name, exc)
        metrics.TASKS_QUEUED.labels(task=task.name, result="skipped").inc()
        return False
    metrics.TASKS_QUEUED.labels(task=task.name, result="queued").inc()
    return True


def enqueue_on_commit(task: Any, *, args: tuple = (), kwargs: dict | None = None, expires: float | None = None) -> None:
    """Queue `task` once the current transaction commits (at once outside one)."""
    from django.db import transaction

    transaction.on_commit(lambda: enqueue(task, args=args, kwargs=kwargs, expires=expires))


def in_process_wait(timeout: float = 10.0) -> None:
    """Wait for the in-process tasks queued so far (tests, and a clean shutdown)."""
    with _in_flight_lock:
        pending = list(_in_flight)
    wait(pending, timeout=timeout)
