"""Reads for the chat path: conversation memory and history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable

from catalog.models import Product

from .llm.base import Message
from .summary import first_sentence
from .models import Conversation, Role, Turn, TurnStatus

VERBATIM_TURNS = 4
MEMORY_SNAPSHOT_TTL = 30 * 60


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
    full_history: list[Message] = field(default_factory=list)  # only for the uncompressed prompt
    focus_id: int | None = None  # what "it" means: the series the conversation was last about
    # What the next turn's memory is derived from without the database (`memory_after_answer`): the
    # SKUs of the history rows it looked at (role, skus; oldest first) and the newest answer's list
    # of several series, however old.
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    last_list: list[str] = field(default_factory=list)


HISTORY_ROWS = max(VERBATIM_TURNS, 6) + 1  # how far back "the second one" and "it" look


def conversation_exists(*, conversation_id: uuid.UUID, session_key: str) -> bool:
    return Conversation.objects.filter(id=conversation_id, session_key=session_key).exists()


def compact_answer(text: str, titles: list[tuple[str, str]]) -> str:
    """An earlier answer as the next prompt needs it: its opening and the numbered list it presented.

    The list keeps "the second one" answerable; the prose around it is what the
    customer already read and costs tokens on every later turn.
    """
    opening = first_sentence(text, 100)
    if not titles:
        return opening
    shown = "; ".join(f"{n}. {title} [{sku}]" for n, (sku, title) in enumerate(titles, start=1))
    return f"Presented: {shown}. {opening}"  # the list first: a cut to fit the budget takes the prose


def conversation_memory(*, conversation_id: uuid.UUID, window: int = VERBATIM_TURNS,
                        full_history: bool = False, answering: str = "") -> Memory:
    """The summary, the last `window` turns (answers compacted) and what recent answers presented.

    `full_history` also returns every turn verbatim: the uncompressed ("naive") prompt.
    `answering`: the client id of a message being answered again (a cut answer continued after
    `resume`); its question and its partial answer are not history.
    """
    conversation = Conversation.objects.filter(id=conversation_id).only("summary", "raw_history_tokens").first()
    if conversation is None:
        return Memory()
    turns = Turn.objects.filter(conversation_id=conversation_id).exclude(status=TurnStatus.FAILED, text="")
    if answering:
        turns = turns.exclude(client_message_id=answering)
    if full_history:
        rows = list(turns.order_by("created_at", "id").values("role", "text", "intent", "product_skus"))
    else:
        rows = list(turns.order_by("-created_at", "-id").values("role", "text", "intent", "product_skus")
                    [:HISTORY_ROWS])
        rows.reverse()
    # The newest row is the user message being answered now: it is not history (excluded by id when known).
    history = rows if answering else (rows[:-1] if rows and rows[-1]["role"] == Role.USER else rows)
    near = history[-HISTORY_ROWS:]
    last_list = next((r["product_skus"] for r in reversed(near)
                      if r["role"] == Role.ASSISTANT and len(r["product_skus"]) > 1), None)
    if last_list is None:
        # The last list shown may be older than the rows looked at ("the first one" after several follow-ups).
        older = (turns.filter(role=Role.ASSISTANT).exclude(product_skus=[]).order_by("-created_at", "-id")
                 .values_list("product_skus", flat=True)[:20])
        last_list = next((skus for skus in older if len(skus) > 1), [])
    skus = {sku for r in near for sku in r["product_skus"]} | set(last_list)
    products = {sku: (pid, en or ja) for sku, pid, en, ja in
                Product.objects.filter(sku__in=skus).values_list("sku", "id", "title_en", "title_ja")} if skus else {}
    recent = []
    for row in history[-window:]:
        if not row["text"]:
            continue
        if row["role"] == Role.ASSISTANT:
            titles = [(sku, products[sku][1]) for sku in row["product_skus"] if sku in products]
            recent.append(Message(row["role"], compact_answer(row["text"], titles)))
        else:
            recent.append(Message(row["role"], row["text"]))
    previous_intent = next((r["intent"] for r in reversed(history) if r["role"] == Role.USER and r["intent"]), "")
    memory = _memory(summary=conversation.summary, raw_history_tokens=conversation.raw_history_tokens, recent=recent,
                     rows=[(r["role"], list(r["product_skus"])) for r in near], last_list=list(last_list),
                     previous_intent=previous_intent, product_id=lambda sku: products[sku][0] if sku in products else None)
    if full_history:
        memory.full_history = [Message(r["role"], r["text"]) for r in history if r["text"]]
    return memory


def _memory(*, summary: str, raw_history_tokens: int, recent: list[Message], rows: list[tuple[str, list[str]]],
            last_list: list[str], previous_intent: str, product_id: Callable[[str], int | None]) -> Memory:
    """The memory of these history rows: which lists were shown ("the second one") and what "it" is."""
    skus_by_answer = [skus for role, skus in reversed(rows) if role == Role.ASSISTANT and skus]
    if last_list and not any(len(skus) > 1 for skus in skus_by_answer):
        skus_by_answer.append(last_list)
    shown = [[pid for pid in map(product_id, skus) if pid is not None] for skus in skus_by_answer]
    # "it": the series the conversation was last about, named by the customer or answered about.
    focus_sku = next((skus[0] for role, skus in reversed(rows) if len(skus) == 1 or (role == Role.USER and skus)), None)
    return Memory(summary=summary, recent=recent, shown=shown, previous_intent=previous_intent,
                  raw_history_tokens=raw_history_tokens, turn_count=len(rows),
                  focus_id=product_id(focus_sku) if focus_sku else None, rows=rows, last_list=last_list)


def memory_after_answer(previous: Memory, *, conversation_id: uuid.UUID, question: str, intent: str,
                        question_skus: list[str], answer: str, presented: list[tuple[str, str]],
                        window: int = VERBATIM_TURNS) -> Memory:
    """The next turn's memory from this turn's and the exchange just saved (texts as stored): what
    `conversation_memory` would read back, from one row instead of the history. `presented`: the
    answer's (SKU, title) pairs in order. The summary and the token count are the database's (the
    summary may have moved on meanwhile)."""
    from catalog.retrieval import get_index

    if previous.turn_count and not getattr(previous, "rows", None):  # a snapshot of an older release
        return conversation_memory(conversation_id=conversation_id, window=window)
    conversation = Conversation.objects.filter(id=conversation_id).only("summary", "raw_history_tokens").first()
    if conversation is None:
        return Memory()
    product_ids = get_index().by_sku
    recent = [*previous.recent, Message(Role.USER.value, question)]
    if answer:
        recent.append(Message(Role.ASSISTANT.value, compact_answer(answer, presented)))
    answer_skus = [sku for sku, _ in presented]
    rows = [*previous.rows, (Role.USER.value, list(question_skus)), (Role.ASSISTANT.value, answer_skus)]
    return _memory(summary=conversation.summary, raw_history_tokens=conversation.raw_history_tokens,
                   recent=recent[-window:], rows=rows[-HISTORY_ROWS:],
                   last_list=answer_skus if len(answer_skus) > 1 else previous.last_list,
                   previous_intent=intent or previous.previous_intent, product_id=product_ids.get)


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


def memory_key(conversation_id: uuid.UUID) -> str:
    return f"chat:memory:{conversation_id}"


def conversation_memory_cached(*, conversation_id: uuid.UUID, answering: str = "") -> Memory:
    """The memory the last answer left in the cache for this turn, else the database's.

    `answering`: the message being answered, which may or may not be saved yet (it is saved
    while the context is assembled); it is never history.
    """
    from django.core.cache import cache

    try:
        snapshot = cache.get(memory_key(conversation_id))
    except Exception:  # noqa: BLE001 - the cache is an accelerator
        snapshot = None
    return snapshot if snapshot is not None else conversation_memory(conversation_id=conversation_id,
                                                                      answering=answering)


def memory_snapshot_store(*, conversation_id: uuid.UUID, memory: Memory | None = None, replace: bool = True) -> None:
    """The next turn's memory (`memory`, or read now), off the customer's wait.

    `replace=False` (after an answer): only if no snapshot was stored since the answer was saved (its
    save dropped the last one). The summary task stores one read after its commit; the answer's own,
    built from a summary read before it, must not overwrite that newer one.
    """
    from django.core.cache import cache

    try:
        store = cache.set if replace else cache.add
        store(memory_key(conversation_id), memory or conversation_memory(conversation_id=conversation_id),
              MEMORY_SNAPSHOT_TTL)
    except Exception:  # noqa: BLE001
        pass
