"""Celery tasks of the chat app: thin, idempotent, taking ids."""

from __future__ import annotations

import uuid

from celery import shared_task

from . import services
from .selectors import VERBATIM_TURNS


@shared_task(name="chat.conversation_summarize", acks_late=True, max_retries=3,
             autoretry_for=(ConnectionError,), retry_backoff=True)
def conversation_summarize_task(conversation_id: str) -> bool:
    """Fold turns that left the verbatim window into the conversation's rolling summary."""
    return services.conversation_summarize(conversation_id=uuid.UUID(conversation_id), window=VERBATIM_TURNS)


@shared_task(name="chat.turn_records_prune", acks_late=True)
def turn_records_prune_task(actor: str = "beat") -> int:
    """Drop per-turn latency records older than TURN_RECORD_RETENTION_DAYS (the dashboard's history)."""
    from django.conf import settings

    return services.turn_records_prune(older_than_days=settings.TURN_RECORD_RETENTION_DAYS)
