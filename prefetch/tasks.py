"""Celery tasks of the prefetch app: thin, safe to run twice, taking plain values."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError

from . import services

try:
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError:  # pragma: no cover - embedded installs without redis-py
    RedisConnectionError = ConnectionError  # type: ignore[misc,assignment]

# Only what may work a moment later: a dropped connection to the database or to Redis.
CONNECTION_ERRORS = (ConnectionError, RedisConnectionError, InterfaceError)


@shared_task(name="prefetch.prefetch_for_turn", acks_late=True, ignore_result=True,
             autoretry_for=CONNECTION_ERRORS, max_retries=2, retry_backoff=True, retry_backoff_max=4,
             soft_time_limit=20, time_limit=30)
def prefetch_task(intent: str, product_ids: list[int], session_key: str, conversation_id: str,
                  predicted_at: float | None = None) -> dict[str, Any]:
    """Warm the cache for the turn likely to follow an `intent` answer that showed `product_ids`.

    Queued by services.prefetch_enqueue with an expiry tied to the prefetch deadline: a backlog
    drops stale prefetches instead of replaying them.
    """
    return services.prefetch_for_turn(intent=intent, product_ids=product_ids, session_key=session_key,
                                      conversation_id=conversation_id, predicted_at=predicted_at).summary()


@shared_task(name="prefetch.speculate", acks_late=True, ignore_result=True, soft_time_limit=30, time_limit=40)
def speculate_task(*, conversation_id: str, session_key: str, page: dict, from_intent: str, product_id: int,
                   predicted_at: float) -> str:
    """Prepare the answer to the follow-up a `from_intent` answer most likely gets (prefetch.speculation).

    Not retried: a speculation that fails is simply not there when the customer asks, and a
    retry would spend tokens on a question that has likely been asked by then.
    """
    from .speculation import speculation_prepare

    return speculation_prepare(conversation_id=conversation_id, session_key=session_key, page=page,
                               from_intent=from_intent, product_id=product_id, predicted_at=predicted_at)


@shared_task(name="prefetch.transitions_relearn", acks_late=True, ignore_result=True,
             autoretry_for=CONNECTION_ERRORS, max_retries=3, retry_backoff=True)
def transitions_relearn_task(actor: str = "beat") -> dict[str, Any]:
    """Relearn the transition probabilities from the last weeks of answers (see prefetch.schedule).

    Samples, smoothing and window come from PrefetchSettings; `actor` is what beat passes.
    """
    return services.transitions_relearn(actor=actor).summary()
