"""Reads for the chat path: conversation memory and history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from catalog.models import Product

from .llm.base import Message
from .models import Conversation, Role, Turn, TurnStatus

VERBATIM_TURNS = 4


@dataclass
class Memory:
    """What the next answer needs to know of the conversation so far."""

    summary: str = ""
    recent: list[Message] = field(default_factory=list)
    # Product ids of the recent answers, newest answer first ("the first one" resolves here).
    shown: list[list[int]] = field(default_factory=list)
    previous_intent: str = ""
    raw_history_tokens: int = 0
    turn_count: int = 0


def conversation_exists(*, conversation_id: uuid.UUID, session_key: str) -> bool:
    return Conversation.objects.filter(id=conversation_id, session_key=session_key).exists()


def conversation_memory(*, conversation_id: uuid.UUID, window: int = VERBATIM_TURNS) -> Memory:
    conversation = Conversation.objects.filter(id=conversation_id).only("summary", "raw_history_tokens").first()
    if conversation is None:
        return Memory()
    rows = list(
        Turn.objects.filter(conversation_id=conversation_id)
        .exclude(status=TurnStatus.FAILED, text="")
        .order_by("-created_at", "-id")
        .values("role", "text", "intent", "product_skus")[: max(window, 6) + 1]
    )
    rows.reverse()
    # The newest row is the user message being answered now: it is not history.
    history = rows[:-1] if rows and rows[-1]["role"] == Role.USER else rows
    recent = [Message(r["role"], r["text"]) for r in history[-window:] if r["text"]]
    skus_by_answer = [r["product_skus"] for r in reversed(history) if r["role"] == Role.ASSISTANT and r["product_skus"]]
    all_skus = {sku for skus in skus_by_answer for sku in skus}
    ids = dict(Product.objects.filter(sku__in=all_skus).values_list("sku", "id")) if all_skus else {}
    shown = [[ids[s] for s in skus if s in ids] for skus in skus_by_answer]
    previous_intent = next((r["intent"] for r in reversed(history) if r["role"] == Role.USER and r["intent"]), "")
    return Memory(summary=conversation.summary, recent=recent, shown=shown, previous_intent=previous_intent,
                  raw_history_tokens=conversation.raw_history_tokens, turn_count=len(history))


@dataclass(frozen=True)
class HistoryTurn:
    role: str
    id: str
    text: str
    status: str
    products: list[str]


def conversation_history(*, conversation_id: uuid.UUID, session_key: str, limit: int = 100) -> list[HistoryTurn] | None:
    """The transcript for the widget, or None when the conversation is not this session's."""
    if not conversation_exists(conversation_id=conversation_id, session_key=session_key):
        return None
    rows = Turn.objects.filter(conversation_id=conversation_id).order_by("-created_at", "-id")[:limit]
    return [HistoryTurn(t.role, t.client_message_id, t.text, t.status, list(t.product_skus)) for t in reversed(rows)]


def assistant_turn_for(*, conversation_id: uuid.UUID, client_message_id: str) -> Turn | None:
    return Turn.objects.filter(conversation_id=conversation_id, client_message_id=client_message_id,
                               role=Role.ASSISTANT).first()
