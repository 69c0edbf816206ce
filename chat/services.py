"""Writes for the chat path: conversations and turns, committed before they matter."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from .compression import count_tokens
from .models import Conversation, Role, Turn, TurnRecord, TurnStatus
from .pii import mask_pii
from .threads import writes


class ConversationNotFound(Exception):
    """The conversation does not exist or belongs to another browser session."""


def conversation_open(*, session_key: str, conversation_id: uuid.UUID | None) -> Conversation:
    """The session's conversation `conversation_id`, or a new one when it is None."""
    if conversation_id is None:
        return Conversation.objects.create(session_key=session_key)
    conversation = Conversation.objects.filter(id=conversation_id, session_key=session_key).first()
    if conversation is None:
        raise ConversationNotFound(str(conversation_id))
    return conversation


def check_conversation_open(*, session_key: str, conversation_param: str | None) -> Conversation:
    """Validate the `conversation=` query parameter, then open (or start) the conversation."""
    if not conversation_param:
        return conversation_open(session_key=session_key, conversation_id=None)
    try:
        conversation_id = uuid.UUID(conversation_param)
    except ValueError as exc:
        raise ConversationNotFound(conversation_param) from exc
    return conversation_open(session_key=session_key, conversation_id=conversation_id)


@dataclass(frozen=True)
class UserTurnResult:
    turn: Turn
    created: bool
    answer: Turn | None  # the saved answer when this message id was already answered


def user_turn_record(*, conversation_id: uuid.UUID, client_message_id: str, text: str, page: dict,
                     new_conversation_session: str | None = None) -> UserTurnResult:
    """Commit the customer's message before the model is called (no turn is ever lost).

    A message id seen before in this conversation is not stored twice. E-mail addresses, phone
    and card numbers are masked in what is stored (the model still sees this turn's message).
    `new_conversation_session`: the conversation starts with this message, for that session
    (one round trip for a socket's first message).
    """
    text = mask_pii(text)
    try:
        with writes.turn(urgent=True), transaction.atomic():
            if new_conversation_session is not None:
                Conversation.objects.create(id=conversation_id, session_key=new_conversation_session)
            turn = Turn.objects.create(conversation_id=conversation_id, role=Role.USER,
                                       client_message_id=client_message_id, text=text, page=page)
            Conversation.objects.filter(id=conversation_id).update(
                raw_history_tokens=F("raw_history_tokens") + count_tokens(text) + 4)
    except IntegrityError:
        turn = Turn.objects.get(conversation_id=conversation_id, client_message_id=client_message_id, role=Role.USER)
        answer = Turn.objects.filter(conversation_id=conversation_id, client_message_id=client_message_id,
                                     role=Role.ASSISTANT).first()
        return UserTurnResult(turn, False, answer)
    return UserTurnResult(turn, True, None)


def assistant_turn_record(*, conversation_id: uuid.UUID, client_message_id: str, text: str, status: TurnStatus,
                          failure_reason: str = "", intent: str = "", product_skus: list[str] | None = None,
                          question_skus: list[str] | None = None, metrics: dict | None = None) -> Turn:
    """Save the answer as it ended: complete, partial (with why) or failed. Idempotent per message id.

    A partial answer continued after `resume` is saved again, whole: its history tokens grow by
    the continuation and its TurnRecord describes how it ended.
    """
    from .selectors import memory_key

    text = mask_pii(text)  # never an e-mail, phone or card number in a stored transcript
    try:
        cache.delete(memory_key(conversation_id))  # history changes: the snapshot is stale
    except Exception:  # noqa: BLE001
        pass
    fields = {"text": text, "status": status, "failure_reason": failure_reason[:200], "intent": intent,
              "product_skus": product_skus or [], "metrics": metrics or {}}
    try:
        return _assistant_turn_save(conversation_id, client_message_id, fields, question_skus or [])
    except IntegrityError:
        # Another process inserted this answer after we looked (PostgreSQL): it exists now, so save over it.
        return _assistant_turn_save(conversation_id, client_message_id, fields, question_skus or [])


def _assistant_turn_save(conversation_id: uuid.UUID, client_message_id: str, fields: dict,
                         question_skus: list[str]) -> Turn:
    """One transaction, as few statements as the save needs: it shares the process with live answers."""
    text, status = fields["text"], fields["status"]
    with writes.turn(), transaction.atomic():
        before = (Turn.objects.select_for_update()
                  .filter(conversation_id=conversation_id, client_message_id=client_message_id, role=Role.ASSISTANT)
                  .values_list("id", "text", "status").first())
        if before is not None and before[2] == TurnStatus.COMPLETE and status != TurnStatus.COMPLETE:
            # A cut producer saving late (its socket died while another process finished the
            # answer after `resume`) never downgrades the complete answer.
            return Turn.objects.get(id=before[0])
        if before is None:
            turn = Turn.objects.create(conversation_id=conversation_id, client_message_id=client_message_id,
                                       role=Role.ASSISTANT, **fields)
        else:
            Turn.objects.filter(id=before[0]).update(**fields)
            turn = Turn(id=before[0], conversation_id=conversation_id, client_message_id=client_message_id,
                        role=Role.ASSISTANT, **fields)
        old_text = before[1] if before else ""
        added = (count_tokens(text) + 4 if before is None else count_tokens(text) - count_tokens(old_text)) if text else 0
        if added and text != old_text:
            Conversation.objects.filter(id=conversation_id).update(raw_history_tokens=F("raw_history_tokens") + added)
        if before is not None and (before[1], before[2]) != (text, status):
            TurnRecord.objects.filter(turn=turn).delete()
            turn_record_create(turn=turn, metrics=fields["metrics"])
        if fields["intent"] or question_skus:
            # The question keeps its intent (the next turn's "previous intent") and the series it named.
            Turn.objects.filter(conversation_id=conversation_id, client_message_id=client_message_id,
                                role=Role.USER).update(intent=fields["intent"], product_skus=question_skus)
        if before is None:
            from .selectors import VERBATIM_TURNS

            turn_record_create(turn=turn, metrics=fields["metrics"])
            conversation_summary_due(conversation_id=conversation_id, window=VERBATIM_TURNS)
    return turn


def turn_record_create(*, turn: Turn, metrics: dict) -> TurnRecord:
    """The answer's latency breakdown, for the dashboard, the alarms and the relearning."""
    return TurnRecord.objects.create(
        conversation_id=turn.conversation_id, turn=turn, client_message_id=turn.client_message_id,
        intent=turn.intent, previous_intent=metrics.get("previous_intent") or "", route=metrics.get("route") or "",
        backend=metrics.get("backend") or "", status=turn.status, prompt_tokens=metrics.get("prompt_tokens") or 0,
        raw_prompt_tokens=metrics.get("raw_prompt_tokens") or 0, compression_ratio=metrics.get("compression_ratio"),
        assembly_ms=metrics.get("assembly_ms"), overhead_ms=metrics.get("overhead_ms"),
        degraded_sources=metrics.get("degraded") or {}, first_token_ms=metrics.get("first_token_ms"),
        total_ms=metrics.get("total_ms") if turn.status == TurnStatus.COMPLETE else None,
        output_tokens=metrics.get("output_tokens") or 0, prefetch_hit=metrics.get("prefetch_hit"),
        provider_cache_hit=bool(metrics.get("provider_cache_hit")), speculative=bool(metrics.get("speculative")),
    )


def turn_record_client_timing(*, conversation_id: uuid.UUID, client_message_id: str,
                              first_token_ms: float | None, total_ms: float | None) -> None:
    """What the browser measured, added to the answer's record."""
    fields = {k: v for k, v in (("client_first_token_ms", first_token_ms), ("client_total_ms", total_ms)) if v is not None}
    if fields:
        with writes.turn():
            TurnRecord.objects.filter(conversation_id=conversation_id,
                                      client_message_id=client_message_id).update(**fields)


def conversation_summarize(*, conversation_id: uuid.UUID, window: int) -> bool:
    """Fold the turns older than the verbatim window into the rolling summary. Safe to run twice.

    The model call (if any) happens outside the transaction; the write applies only
    if nobody folded the same turns meanwhile. Returns True when the summary moved on.
    """
    from catalog.models import Product

    from .summary import summary_by_model, summary_lines, summary_merge

    conversation = Conversation.objects.filter(id=conversation_id).only("summary", "summary_through").first()
    if conversation is None:
        return False
    turns = list(Turn.objects.filter(conversation_id=conversation_id).order_by("created_at", "id")
                 .values("role", "text", "intent", "product_skus"))
    fold_until = len(turns) - window
    if fold_until <= conversation.summary_through:
        return False
    to_fold = turns[conversation.summary_through:fold_until]
    skus = {s for t in to_fold for s in t["product_skus"]}
    titles = {sku: en or ja for sku, en, ja in Product.objects.filter(sku__in=skus).values_list("sku", "title_en", "title_ja")}
    lines = summary_lines(to_fold, titles)
    summary = summary_by_model(conversation.summary, lines) or summary_merge(conversation.summary, lines)
    with writes.turn(), transaction.atomic():
        moved = Conversation.objects.filter(id=conversation_id, summary_through=conversation.summary_through).update(
            summary=summary, summary_through=fold_until)
    if moved:
        from .selectors import memory_snapshot_store

        memory_snapshot_store(conversation_id=conversation_id)  # the next turn sees the new summary
    return bool(moved)


def conversation_summary_due(*, conversation_id: uuid.UUID, window: int) -> None:
    """Queue the summary task (after commit) once turns have left the verbatim window."""
    from mangaassist.celery import enqueue_on_commit

    from .tasks import conversation_summarize_task

    count, summarized = (Conversation.objects.filter(id=conversation_id).annotate(n=Count("turns"))
                         .values_list("n", "summary_through").first() or (0, 0))
    if count - window > (summarized or 0):
        enqueue_on_commit(conversation_summarize_task, args=(str(conversation_id),))


def turn_records_prune(*, older_than_days: int, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Delete per-turn latency records past the retention window, in batches (short transactions)."""
    cutoff = (now or timezone.now()) - timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = list(TurnRecord.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += TurnRecord.objects.filter(id__in=ids).delete()[0]
