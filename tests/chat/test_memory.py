"""The next turn's memory, derived after each answer without reading the history back, is the one the
database gives: the same recent turns, lists shown, "it", intent, summary and token count."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from chat.selectors import Memory, conversation_memory, memory_key
from tests.conftest import open_chat, saved_turns

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATION = [
    "Recommend a shonen manga like Dragon Ball",
    "Tell me more about the second one",
    "How many volumes does it have?",
    "Show me some romance manga",
    "Is the first one finished?",
    "My email is someone@example.com, what's on sale?",
    "And the last one, is it in stock?",
]


async def _snapshot(conversation_id: uuid.UUID, stale: Memory | None, timeout: float = 5.0) -> Memory | None:
    """The snapshot the last answer left, once it replaced `stale` (the one this turn was given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = cache.get(memory_key(conversation_id))
        if snapshot is not None and (stale is None or dataclasses.asdict(snapshot) != dataclasses.asdict(stale)):
            return snapshot
        await asyncio.sleep(0.02)
    return None


async def test_each_derived_memory_equals_the_one_read_from_the_database(demo_catalog: None) -> None:
    chat = await open_chat()
    conversation_id = None
    derived: Memory | None = None
    for n, text in enumerate(CONVERSATION):
        frames = await chat.ask(text, f"q{n}")
        assert frames[-1]["type"] == "completed"
        conversation_id = uuid.UUID(frames[0]["conversation"])
        await saved_turns(2 * (n + 1))
        derived = await _snapshot(conversation_id, stale=derived)
        assert derived is not None
        cache.delete(memory_key(conversation_id))  # the next turn derives from the database's, as it would
        read = await sync_to_async(conversation_memory)(conversation_id=conversation_id)
        assert dataclasses.asdict(derived) == dataclasses.asdict(read), f"after turn {n}: {text}"
        cache.set(memory_key(conversation_id), derived)  # and from the derived one for the next turn
    assert any(len(ids) > 1 for ids in read.shown) and read.focus_id is not None and len(read.recent) == 4
    await chat.ws.disconnect()


def test_the_answers_memory_never_replaces_a_snapshot_stored_since_the_answer_was_saved() -> None:
    """The summary task commits a new summary and stores the memory read after it, while the answer's own
    memory, built from the summary read before, is still on its way: the newer one stays."""
    from chat.selectors import memory_snapshot_store

    conversation_id = uuid.uuid4()
    cache.delete(memory_key(conversation_id))  # the answer's save dropped the last snapshot
    memory_snapshot_store(conversation_id=conversation_id, memory=Memory(summary="Series discussed: A; B"))
    memory_snapshot_store(conversation_id=conversation_id, memory=Memory(summary="Series discussed: A"), replace=False)
    assert cache.get(memory_key(conversation_id)).summary == "Series discussed: A; B"

    cache.delete(memory_key(conversation_id))  # the next answer is saved: its memory goes in
    memory_snapshot_store(conversation_id=conversation_id, memory=Memory(summary="Series discussed: A; B; C"),
                          replace=False)
    assert cache.get(memory_key(conversation_id)).summary == "Series discussed: A; B; C"
