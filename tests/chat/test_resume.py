"""`resume` through the real ASGI app: a closed socket cancels the answer, the next socket continues it.

The stream log (chat.streamlog) holds every delta sent; a resume replays what the
browser missed and continues the answer with the model from the logged text.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any, AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from chat import streamlog
from chat.llm.simulated import SimulatedBackend
from chat.models import Role, Turn, TurnStatus
from tests.conftest import ORIGIN, ChatClient, open_chat, require_service

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Recommend a shonen manga like Dragon Ball"
GENEROUS = {"memory": 3.0, "memory_reference": 3.0, "retrieval": 3.0, "store": 3.0, "prefetch": 3.0, "essential": 3.0}
REDIS_URL = os.environ.get("TEST_STREAMLOG_REDIS_URL", "redis://127.0.0.1:6379/11")


class RecordingBackend(SimulatedBackend):
    """The simulated model, remembering the prefill of each call (one call per answer or continuation)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefills: list[str] = []

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        self.prefills.append(request.prefill)
        async for event in super().stream(request):
            yield event


async def _question_logged(message_id: str, logged: list[str]) -> tuple[tuple[bytes, bytes], str, str]:
    """A conversation whose question `message_id` is saved and whose log holds `logged` deltas of an
    open answer, as a producer killed mid-answer leaves them: (session cookie, conversation, log key)."""
    from chat import services

    cookie = await _session_cookie()
    first = await open_chat(headers=[ORIGIN, cookie])
    conversation = (await first.ask("Hello", "h1"))[0]["conversation"]
    await first.ws.disconnect()
    await sync_to_async(services.user_turn_record)(conversation_id=conversation, client_message_id=message_id,
                                                   text=QUESTION, page={})
    key = streamlog.message_key(conversation, message_id)
    cache.set_many({f"{key}:head": {"n": len(logged), "state": "open", "final": None}, f"{key}:c:0": logged,
                    f"{key}:meta": {"text": QUESTION, "page": {}}}, timeout=60)
    return cookie, conversation, key


def _use(decode_ms: float = 10, prefill_ms: float = 60) -> RecordingBackend:
    """A model slow enough to leave a socket mid-answer."""
    from django.conf import settings

    from chat.assembly import ContextAssembler
    from chat.consumers import ChatConsumer
    from chat.orchestrator import Orchestrator

    settings.LLM_SIM_PREFILL_BASE_MS = prefill_ms
    settings.LLM_SIM_PREFILL_PER_TOKEN_MS = 0
    settings.LLM_SIM_DECODE_MS_PER_TOKEN = decode_ms
    settings.LLM_SIM_JITTER = 0
    backend = RecordingBackend(profile="bedrock", seed=3)
    # Deadlines no busy test machine misses: the simulated model then writes the same answer every time,
    # and a continuation picks up exactly where the cut answer stopped.
    ChatConsumer.orchestrator = Orchestrator(backend=backend, assembler=ContextAssembler(deadlines=GENEROUS))
    return backend


@pytest.fixture
def paced(settings: Any, demo_catalog: None) -> RecordingBackend:
    return _use()


async def _session_cookie() -> tuple[bytes, bytes]:
    from django.contrib.sessions.backends.cached_db import SessionStore

    store = SessionStore()
    await sync_to_async(store.save)()
    return (b"cookie", f"sessionid={store.session_key}".encode())


async def _whole_answer() -> dict:
    """The answer a fresh conversation gets to QUESTION (the simulated model writes the same each time)."""
    reference = await open_chat(headers=[ORIGIN, await _session_cookie()])
    frames = await reference.ask(QUESTION, "reference")
    await reference.ws.disconnect()
    assert frames[-1]["type"] == "completed"
    return frames[-1]


async def _leave_mid_answer(cookie: tuple[bytes, bytes], message_id: str, deltas: int) -> tuple[str, list[dict]]:
    """Ask on one socket, read `deltas` deltas, close the socket. The conversation and the deltas read."""
    first = await open_chat(headers=[ORIGIN, cookie])
    await first.send({"type": "message", "id": message_id, "text": QUESTION})
    ack = await first.receive()
    assert ack["type"] == "ack"
    received: list[dict] = []
    while len(received) < deltas:
        frame = await first.receive()
        assert frame["type"] in {"delta", "keepalive"}, frame
        if frame["type"] == "delta":
            received.append(frame)
    await first.ws.disconnect()
    return ack["conversation"], received


async def _reopen(cookie: tuple[bytes, bytes], conversation: str) -> ChatClient:
    return await open_chat(f"/ws/chat/?conversation={conversation}", headers=[ORIGIN, cookie])


async def _answer_when(message_id: str, status: TurnStatus, timeout: float = 5.0) -> Turn:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        turn = await sync_to_async(Turn.objects.filter(role=Role.ASSISTANT, client_message_id=message_id).first)()
        if (turn is not None and turn.status == status) or loop.time() > deadline:
            assert turn is not None and turn.status == status, turn and (turn.status, turn.text)
            return turn
        await asyncio.sleep(0.02)


async def _log_released(key: str, timeout: float = 5.0) -> None:
    """Until the answer's producer let go of its log (everything it queued is written by then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await sync_to_async(cache.get)(f"{key}:lock") is not None:
        assert loop.time() < deadline, f"{key} is still held"
        await asyncio.sleep(0.02)


def _deltas(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] == "delta"]


def _text(deltas: list[dict]) -> str:
    return "".join(d["text"] for d in deltas)


def _indexes(deltas: list[dict]) -> list[int]:
    return [d["index"] for d in deltas]


class ResumeTests:
    async def test_closed_socket_cancels_the_answer_and_a_resume_continues_it_without_gaps(
            self, paced: RecordingBackend) -> None:
        whole = await _whole_answer()
        cookie = await _session_cookie()
        conversation, before = await _leave_mid_answer(cookie, "r1", deltas=5)

        # The closed socket cancelled the answer: it is saved partial, and once its producer wrote what
        # it had queued and let go of the log, the log stops growing.
        partial = await _answer_when("r1", TurnStatus.PARTIAL)
        key = streamlog.message_key(conversation, "r1")
        await _log_released(key)
        logged = await streamlog.read_after(key, -1)
        await asyncio.sleep(0.2)
        assert (await streamlog.read_after(key, -1)).count == logged.count < len(_split(whole["text"]))
        assert logged.state == streamlog.OPEN and logged.count >= 5
        assert "".join(text for _, text in logged.deltas).startswith(partial.text) and partial.text

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "r1", "after": before[-1]["index"]})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()

        after = _deltas(frames)
        assert _indexes(before + after) == list(range(len(before) + len(after)))  # from 0, no gap, no repeat
        completed = frames[-1]
        assert completed["type"] == "completed" and completed["id"] == "r1"
        assert completed["text"] == _text(before + after) == whole["text"]  # nothing doubled at the seam
        assert [p["sku"] for p in completed["products"]] == [p["sku"] for p in whole["products"]]
        # The model was asked once for the answer and once to continue it from the logged text.
        assert paced.prefills[-2:] == ["", "".join(text for _, text in logged.deltas)]
        saved = await _answer_when("r1", TurnStatus.COMPLETE)
        assert saved.text == whole["text"]

    async def test_resume_of_a_finished_answer_replays_the_rest_then_completed(self, demo_catalog: None) -> None:
        cookie = await _session_cookie()
        first = await open_chat(headers=[ORIGIN, cookie])
        original = await first.ask(QUESTION, "f1")
        await first.ws.disconnect()
        await _answer_when("f1", TurnStatus.COMPLETE)
        sent = _deltas(original)

        second = await _reopen(cookie, original[0]["conversation"])
        await second.send({"type": "resume", "id": "f1", "after": 3})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        assert frames[:-1] == sent[4:]  # the very deltas, from the log
        assert frames[-1] == original[-1]  # the very `completed`, products and metrics included

    async def test_resume_of_a_stopped_answer_replays_it_then_stopped(self, paced: RecordingBackend) -> None:
        cookie = await _session_cookie()
        first = await open_chat(headers=[ORIGIN, cookie])
        await first.send({"type": "message", "id": "s1", "text": QUESTION})
        conversation = (await first.until("delta"))[0]["conversation"]
        await first.send({"type": "stop", "id": "s1"})
        await first.until("stopped")
        await first.ws.disconnect()
        partial = await _answer_when("s1", TurnStatus.PARTIAL)

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "s1", "after": -1})
        replay = await second.until("stopped", "completed", "error")
        await second.ws.disconnect()
        assert replay[-1] == {"type": "stopped", "id": "s1"}  # a stop is final: not continued
        assert _text(_deltas(replay)).startswith(partial.text) and _indexes(_deltas(replay)) == list(range(len(replay) - 1))
        assert len(paced.prefills) == 1

    async def test_resume_before_the_first_token_gets_the_whole_answer(self, settings: Any, demo_catalog: None) -> None:
        _use(prefill_ms=400)
        cookie = await _session_cookie()
        conversation, _ = await _leave_mid_answer(cookie, "e1", deltas=0)

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "e1", "after": -1})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        deltas = _deltas(frames)
        assert _indexes(deltas) == list(range(len(deltas))) and len(deltas) > 10
        assert frames[-1]["type"] == "completed" and frames[-1]["text"] == _text(deltas)
        assert (await _answer_when("e1", TurnStatus.COMPLETE)).text == _text(deltas)

    async def test_two_sockets_resuming_at_once_continue_the_answer_once(self, paced: RecordingBackend) -> None:
        whole = await _whole_answer()
        cookie = await _session_cookie()
        conversation, before = await _leave_mid_answer(cookie, "t1", deltas=3)
        tabs = [await _reopen(cookie, conversation) for _ in range(2)]
        for tab in tabs:
            await tab.send({"type": "resume", "id": "t1", "after": -1})
        results = await asyncio.gather(*(tab.until("completed", "error") for tab in tabs))
        for tab, frames in zip(tabs, results):
            await tab.ws.disconnect()
            deltas = _deltas(frames)
            assert _indexes(deltas) == list(range(len(deltas)))
            assert frames[-1]["type"] == "completed" and frames[-1]["text"] == _text(deltas) == whole["text"]
        assert len(paced.prefills) == 3, [p[:30] for p in paced.prefills]  # the reference, the first attempt, one continuation (not two)
        assert paced.prefills[-1].startswith(_text(before))

    async def test_stop_on_a_following_socket_stops_the_answer_where_it_is_produced(self, settings: Any,
                                                                                     demo_catalog: None) -> None:
        _use(decode_ms=30)
        cookie = await _session_cookie()
        producer = await open_chat(headers=[ORIGIN, cookie])
        await producer.send({"type": "message", "id": "p1", "text": QUESTION})
        conversation = (await producer.until("delta"))[0]["conversation"]
        follower = await _reopen(cookie, conversation)
        await follower.send({"type": "resume", "id": "p1", "after": -1})
        await follower.until("delta")
        await follower.send({"type": "stop", "id": "p1"})
        assert (await follower.until("stopped"))[-1] == {"type": "stopped", "id": "p1"}
        # The socket answering it learns of the stop through the log within a check interval.
        frames = await producer.until("stopped", "completed", timeout=2)
        assert frames[-1] == {"type": "stopped", "id": "p1"}
        assert (await _answer_when("p1", TurnStatus.PARTIAL)).failure_reason == "stopped"
        await producer.ws.disconnect()
        await follower.ws.disconnect()

    async def test_log_of_a_killed_producer_is_continued_once_its_lock_expires(self, paced: RecordingBackend) -> None:
        """SIGKILL: no partial answer saved, the lock left to expire, the log holding what was sent."""
        whole = await _whole_answer()
        reference = [(i, text) for i, text in enumerate(_split(whole["text"]))]
        cookie, conversation, key = await _question_logged("k1", [text for _, text in reference[:3]])
        cache.set(f"{key}:lock", "the-killed-process", timeout=1)

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "k1", "after": 1})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        deltas = _deltas(frames)
        assert deltas[0] == {"type": "delta", "id": "k1", "index": 2, "text": reference[2][1]}
        assert _indexes(deltas) == list(range(2, 2 + len(deltas)))
        assert frames[-1]["type"] == "completed" and frames[-1]["text"] == whole["text"]
        assert reference[0][1] + reference[1][1] + _text(deltas) == whole["text"]
        assert (await _answer_when("k1", TurnStatus.COMPLETE)).text == whole["text"]

    @pytest.mark.parametrize("says_chars", [True, False], ids=["chars", "index-only client"])
    async def test_a_browser_ahead_of_the_log_gets_only_what_it_lacks(self, paced: RecordingBackend,
                                                                      says_chars: bool) -> None:
        """Killed inside a batch on Redis: the browser painted deltas the log never got. The continuation
        writes them again (into the log); the browser is sent only the ones after its own."""
        whole = await _whole_answer()
        reference = _split(whole["text"])
        cookie, conversation, key = await _question_logged("a1", reference[:3])

        second = await _reopen(cookie, conversation)
        resume = {"type": "resume", "id": "a1", "after": 5}  # it has deltas 0-5; the log 0-2
        if says_chars:
            resume["chars"] = len("".join(reference[:6]))
        await second.send(resume)
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        deltas = _deltas(frames)
        assert _indexes(deltas) == list(range(6, 6 + len(deltas)))
        assert "".join(reference[:6]) + _text(deltas) == frames[-1]["text"] == whole["text"]
        logged = await streamlog.read_after(key, -1)
        assert logged.state == streamlog.COMPLETED and "".join(text for _, text in logged.deltas) == whole["text"]
        assert [index for index, _ in logged.deltas] == list(range(6 + len(deltas)))

    async def test_a_browser_ahead_of_the_log_is_continued_at_its_last_character(self, paced: RecordingBackend) -> None:
        """The lost deltas need not split where the continuation's do (a killed producer coalesced them
        into bigger frames than the model's tokens): the seam is placed by the characters the browser has."""
        whole = await _whole_answer()
        text = whole["text"]
        painted = [text[start:start + 9] for start in range(0, 54, 9)]  # six deltas of nine characters
        cookie, conversation, key = await _question_logged("a2", painted[:2])

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "a2", "after": 5, "chars": 54})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        deltas = _deltas(frames)
        assert deltas and _indexes(deltas) == list(range(6, 6 + len(deltas)))
        assert "".join(painted) + _text(deltas) == frames[-1]["text"] == text  # nothing doubled or lost at the seam
        logged = await streamlog.read_after(key, -1)
        assert [index for index, _ in logged.deltas] == list(range(6 + len(deltas)))
        assert "".join(t for _, t in logged.deltas) == text and logged.state == streamlog.COMPLETED
        # A second browser (another tab) replays the whole answer from the log, seam included.
        third = await _reopen(cookie, conversation)
        await third.send({"type": "resume", "id": "a2", "after": -1})
        replay = await third.until("completed", "error")
        await third.ws.disconnect()
        assert _text(_deltas(replay)) == text

    @pytest.mark.parametrize("claim", [{"after": 10**9, "chars": 10**9}, {"after": 40, "chars": 30}],
                             ids=["more than any batch", "fewer characters than deltas"])
    async def test_a_resume_claiming_what_no_browser_can_have_still_ends_the_answer(
            self, paced: RecordingBackend, claim: dict) -> None:
        whole = await _whole_answer()
        cookie, conversation, _ = await _question_logged("a3", _split(whole["text"])[:3])

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "a3", **claim})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        assert frames[-1]["type"] == "completed" and frames[-1]["text"] == whole["text"]
        assert all(f["index"] > claim["after"] for f in _deltas(frames))

    async def test_unknown_message_is_an_error_and_the_socket_goes_on(self, paced: RecordingBackend) -> None:
        cookie = await _session_cookie()
        first = await open_chat(headers=[ORIGIN, cookie])
        conversation = (await first.ask("Hello", "h1"))[0]["conversation"]
        await first.ws.disconnect()

        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "never-sent", "after": -1})
        error = await second.receive()
        assert (error["type"], error["code"], error["id"]) == ("error", "unknown_message", "never-sent")
        assert (await second.ask("Hello again", "h2"))[-1]["type"] == "completed"
        await second.ws.disconnect()

    async def test_resume_in_another_sessions_conversation_finds_nothing(self, paced: RecordingBackend) -> None:
        cookie = await _session_cookie()
        conversation, _ = await _leave_mid_answer(cookie, "o1", deltas=2)
        stranger = await _reopen(await _session_cookie(), conversation)
        assert (await stranger.receive())["code"] == "conversation_not_found"
        await stranger.send({"type": "resume", "id": "o1", "after": -1})
        error = await stranger.receive()
        assert (error["type"], error["code"], error["id"]) == ("error", "unknown_message", "o1")
        await stranger.ws.disconnect()

    async def test_resume_while_an_answer_is_in_flight_is_busy(self, paced: RecordingBackend) -> None:
        chat = await open_chat(headers=[ORIGIN, await _session_cookie()])
        await chat.send({"type": "message", "id": "b1", "text": QUESTION})
        await chat.until("delta")
        await chat.send({"type": "resume", "id": "b1", "after": 0})
        frames = await chat.until("error", "completed")
        assert (frames[-1]["type"], frames[-1]["code"], frames[-1]["id"]) == ("error", "busy", "b1")
        frames = await chat.until("completed")
        assert _indexes(_deltas(frames)) == list(range(_deltas(frames)[0]["index"], _deltas(frames)[-1]["index"] + 1))
        await chat.ws.disconnect()

    async def test_resent_message_id_after_a_cut_continues_the_answer(self, paced: RecordingBackend) -> None:
        """A browser that cannot tell whether its message arrived sends it again, same id: answered once."""
        whole = await _whole_answer()
        cookie = await _session_cookie()
        conversation, before = await _leave_mid_answer(cookie, "d1", deltas=4)
        second = await _reopen(cookie, conversation)
        frames = await second.ask(QUESTION, "d1")
        await second.ws.disconnect()
        assert frames[0]["type"] == "ack" and frames[-1]["text"] == _text(_deltas(frames)) == whole["text"]
        assert _indexes(_deltas(frames)) == list(range(len(_deltas(frames))))
        count = await sync_to_async(Turn.objects.filter(client_message_id="d1").count)()
        assert count == 2

    async def test_resent_message_id_of_a_finished_answer_not_yet_saved_gets_its_completed_frame(
            self, demo_catalog: None) -> None:
        """The answer is out and logged, its save still to come (a busy database): the browser asking
        again gets the answer as a saved one is sent, not a replay of every delta."""
        cookie = await _session_cookie()
        first = await open_chat(headers=[ORIGIN, cookie])
        original = await first.ask(QUESTION, "u1")
        await first.ws.disconnect()
        await _answer_when("u1", TurnStatus.COMPLETE)
        await sync_to_async(Turn.objects.filter(role=Role.ASSISTANT, client_message_id="u1").delete)()
        second = await _reopen(cookie, original[0]["conversation"])
        frames = await second.ask(QUESTION, "u1")
        await second.ws.disconnect()
        assert [f["type"] for f in frames] == ["ack", "completed"]
        assert frames[-1] == original[-1]  # the very `completed`, from the log
        count = await sync_to_async(Turn.objects.filter(client_message_id="u1", role=Role.USER).count)()
        assert count == 1


def _split(text: str) -> list[str]:
    """The answer as the simulated model streams it (token by token)."""
    from chat.compression import encoding

    return [encoding().decode([token]) for token in encoding().encode_ordinary(text)]


@pytest.fixture
def redis_cache(settings: Any) -> None:
    """The stream log on Redis, as in scaled mode (cache calls on a thread), under a key prefix of its own."""
    require_service("Redis", REDIS_URL, 6379)
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                                   "KEY_PREFIX": f"resume-test-{uuid.uuid4().hex}", "TIMEOUT": 300,
                                   "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}


class RedisStreamLogTests:
    async def test_resume_on_redis_continues_the_answer_without_gaps(self, redis_cache: None,
                                                                     paced: RecordingBackend) -> None:
        whole = await _whole_answer()
        cookie = await _session_cookie()
        conversation, before = await _leave_mid_answer(cookie, "n1", deltas=6)
        second = await _reopen(cookie, conversation)
        await second.send({"type": "resume", "id": "n1", "after": before[-1]["index"]})
        frames = await second.until("completed", "error")
        await second.ws.disconnect()
        after = _deltas(frames)
        assert _indexes(before + after) == list(range(len(before) + len(after)))
        assert frames[-1]["type"] == "completed" and frames[-1]["text"] == _text(before + after) == whole["text"]

    async def test_writer_batches_deltas_into_chunks_and_lets_go_of_the_lock(self, redis_cache: None) -> None:
        key = streamlog.message_key(uuid.uuid4(), "w1")
        writer = streamlog.StreamLogWriter.start(key, text="q", page={"store_section": "shonen"})
        pieces = [f"word{n} " for n in range(100)]
        for index, text in enumerate(pieces):
            writer.append(index, text)
            if index % 7 == 0:
                await asyncio.sleep(0.001)  # let the writer run mid-answer: several batches
        assert (await streamlog.read_after(key, -1)).known
        assert await streamlog.StreamLogWriter.take_over(key) is None  # the producer holds the lock
        writer.finish(streamlog.COMPLETED, '{"type":"completed"}')
        writer.end()
        await writer.ended()
        read = await streamlog.read_after(key, 40, with_question=True)
        assert [text for _, text in read.deltas] == pieces[41:] and read.count == 100
        assert read.state == streamlog.COMPLETED and read.final_frame == '{"type":"completed"}'
        assert read.question == {"text": "q", "page": {"store_section": "shonen"}}
        taken = await streamlog.StreamLogWriter.take_over(key)  # let go: a later resume may take it
        assert taken is not None
        taken[0].end()
        await taken[0].ended()


class HistoryTests:
    async def test_history_gives_past_answers_with_their_product_cards(self, demo_catalog: None,
                                                                       async_client: Any) -> None:
        cookie = await _session_cookie()
        chat = await open_chat(headers=[ORIGIN, cookie])
        frames = await chat.ask(QUESTION, "h1")
        await chat.ws.disconnect()
        await _answer_when("h1", TurnStatus.COMPLETE)
        conversation = frames[0]["conversation"]

        async_client.cookies["sessionid"] = cookie[1].decode().split("=", 1)[1]
        response = await async_client.get(f"/chat/conversations/{conversation}/")
        assert response.status_code == 200 and "no-cache" in response["Cache-Control"]
        question, answer = response.json()["turns"]
        assert (question["role"], question["id"], question["text"]) == ("user", "h1", QUESTION)
        assert (answer["role"], answer["id"], answer["status"]) == ("assistant", "h1", "complete")
        assert answer["text"] == frames[-1]["text"]
        assert answer["products"] == frames[-1]["products"]  # the very cards `completed` carried
        assert {"sku", "title", "title_ja", "authors", "price", "in_stock", "url"} <= set(answer["products"][0])

        async_client.cookies["sessionid"] = (await _session_cookie())[1].decode().split("=", 1)[1]
        assert (await async_client.get(f"/chat/conversations/{conversation}/")).status_code == 404
