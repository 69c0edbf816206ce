"""Bad input on the chat socket: every bad frame gets an error frame and the socket goes on answering.

Through the real ASGI application (Origin header, sessions, consumer, orchestrator, the
instant simulated model); every frame the server sends is checked against DESIGN.md §4
(tests.reliability.frames).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chat.consumers import ChatConsumer
from chat.llm.base import LLMRequest, TextDelta, Usage
from chat.models import Role, Turn, TurnRecord
from chat.orchestrator import Orchestrator
from chat.protocol import PAGE_FIELDS
from tests.conftest import ORIGIN, saved_turns
from tests.reliability.frames import CheckedClient, open_checked

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def chat(demo_catalog: None) -> AsyncIterator[CheckedClient]:
    client = await open_checked()
    yield client
    await client.ws.disconnect()


async def _still_answers(chat: CheckedClient, message_id: str = "after") -> None:
    """The socket survived: it still answers a question and a ping."""
    frames = await chat.ask("Recommend a seinen manga", message_id)
    assert frames[-1]["type"] == "completed", frames[-1]
    assert (await chat.ping())[-1] == {"type": "pong"}


async def _error(chat: CheckedClient, frame: str | dict, *, code: str, message_id: Any = None) -> dict:
    await chat.send(frame)
    error = await chat.receive()
    assert (error["type"], error["code"], error["id"]) == ("error", code, message_id), error
    return error


async def _user_turn(message_id: str) -> Turn:
    return await sync_to_async(Turn.objects.get)(role=Role.USER, client_message_id=message_id)


class GatedBackend:
    """A model that writes one delta, then waits for `release` before it finishes its answer."""

    name = "gated"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def stream(self, request: LLMRequest) -> AsyncIterator[TextDelta | Usage]:
        self.calls += 1
        yield TextDelta(f"Answer {self.calls} begins")
        await self.release.wait()
        yield TextDelta(" and ends.")
        yield Usage(input_tokens=request.prompt_tokens, output_tokens=2)


class FrameSizeTests:
    async def test_frame_at_the_byte_limit_is_read_and_one_byte_over_is_too_long(self, chat: CheckedClient,
                                                                                  settings) -> None:  # type: ignore[no-untyped-def]
        limit = settings.CHAT_MAX_FRAME_BYTES
        frame = {"type": "message", "id": "big1", "text": "Recommend a shonen manga", "padding": ""}
        frame["padding"] = "x" * (limit - len(json.dumps(frame).encode()))
        assert len(json.dumps(frame).encode()) == limit
        await chat.send(frame)
        assert (await chat.until("completed", "error"))[-1]["type"] == "completed"

        frame["id"], frame["padding"] = "big2", frame["padding"] + "x"
        await _error(chat, frame, code="too_long")  # the frame is not parsed: no id to echo
        await _still_answers(chat)

    async def test_limit_counts_bytes_not_characters(self, chat: CheckedClient, settings) -> None:  # type: ignore[no-untyped-def]
        chars = settings.CHAT_MAX_FRAME_BYTES // 3 + 10  # fewer characters than the limit, more bytes (3 each)
        await _error(chat, '{"type": "ping", "pad": "' + "漢" * chars + '"}', code="too_long")
        await _still_answers(chat)

    async def test_many_oversized_frames_in_a_row(self, chat: CheckedClient, settings) -> None:  # type: ignore[no-untyped-def]
        huge = "x" * (settings.CHAT_MAX_FRAME_BYTES * 4)
        for _ in range(20):
            await chat.send(huge)
        for _ in range(20):
            assert (await chat.receive())["code"] == "too_long"
        await _still_answers(chat)

    async def test_binary_frame_is_invalid(self, chat: CheckedClient) -> None:
        await chat.ws.send_to(bytes_data=json.dumps({"type": "ping"}).encode())
        error = await chat.receive()
        assert (error["type"], error["code"]) == ("error", "invalid_message")
        await _still_answers(chat)


class InvalidJsonTests:
    @pytest.mark.parametrize("raw", ["", " ", "{", "}", "[", "nul", "{'type': 'ping'}", '{"type": "ping",}',
                                     '{"type": "ping"} trailing', "\x00", "\ufeff{}", '{"type": "ping"',
                                     "[" * 15_000 + "]" * 15_000, '{"a":' * 5_000 + "1" + "}" * 5_000])
    async def test_invalid_json_is_an_error_and_the_socket_stays(self, chat: CheckedClient, raw: str) -> None:
        await _error(chat, raw, code="invalid_json")
        await _still_answers(chat)

    @pytest.mark.parametrize("raw", ["null", "1", '"ping"', "[]", '[{"type": "ping"}]', "true", "1e999"])
    async def test_json_that_is_not_an_object_is_invalid(self, chat: CheckedClient, raw: str) -> None:
        await _error(chat, raw, code="invalid_message")
        await _still_answers(chat)


class WrongTypeTests:
    @pytest.mark.parametrize(("frame", "message_id"), [
        ({"type": 1}, None),
        ({"type": None}, None),
        ({"type": ["message"]}, None),
        ({"type": "MESSAGE", "id": "w1"}, "w1"),
        ({"type": "message"}, None),
        ({"type": "message", "id": 42, "text": "hi"}, None),
        ({"type": "message", "id": "", "text": "hi"}, None),
        ({"type": "message", "id": "x" * 65, "text": "hi"}, None),
        ({"type": "message", "id": "has space", "text": "hi"}, None),
        ({"type": "message", "id": "メッセージ", "text": "hi"}, None),
        ({"type": "message", "id": ["w1"], "text": "hi"}, None),
        ({"type": "message", "id": "w1"}, "w1"),
        ({"type": "message", "id": "w1", "text": None}, "w1"),
        ({"type": "message", "id": "w1", "text": ["hi"]}, "w1"),
        ({"type": "message", "id": "w1", "text": {"en": "hi"}}, "w1"),
        ({"type": "message", "id": "w1", "text": True}, "w1"),
        ({"type": "message", "id": "w1", "text": 3.5}, "w1"),
        ({"type": "message", "id": "w1", "text": "hi", "page": ["current_asin"]}, "w1"),
        ({"type": "message", "id": "w1", "text": "hi", "page": "shonen"}, "w1"),
        ({"type": "message", "id": "w1", "text": "hi", "page": {"current_asin": 123}}, "w1"),
        ({"type": "message", "id": "w1", "text": "hi", "page": {"browsing_history": "B0123"}}, "w1"),
        ({"type": "message", "id": "w1", "text": "hi", "page": {"cart_asins": {"B0": 1}}}, "w1"),
        ({"type": "stop"}, None),
        ({"type": "stop", "id": 7}, None),
        ({"type": "resume", "id": "w1", "after": "3"}, "w1"),
        ({"type": "resume", "id": "w1", "after": -2}, "w1"),
        ({"type": "resume", "id": "w1", "after": 1.5}, "w1"),
        ({"type": "resume", "id": "w1", "after": True}, "w1"),
        ({"type": "resume", "id": "w1", "after": 3, "chars": -1}, "w1"),
        ({"type": "resume", "id": "w1", "after": 3, "chars": "12"}, "w1"),
        ({"type": "resume", "id": "w1", "after": 3, "chars": 2.5}, "w1"),
        ({"type": "client_metrics", "first_token_ms": 100}, None),
    ])
    async def test_wrong_types_are_invalid_and_echo_only_a_valid_id(self, chat: CheckedClient, frame: dict,
                                                                   message_id: str | None) -> None:
        await _error(chat, frame, code="invalid_message", message_id=message_id)
        await _still_answers(chat)

    async def test_error_message_never_echoes_the_input(self, chat: CheckedClient) -> None:
        marker = "<script>alert(1)</script>"
        for frame in ({"type": marker}, {"type": "message", "id": "e1", "text": {marker: 1}},
                      {"type": "message", "id": "e1", "text": "hi", "page": {"current_asin": [marker]}}):
            error = await _error(chat, frame, code="invalid_message", message_id=frame.get("id"))
            assert marker not in json.dumps(error)


class UnknownFieldTests:
    async def test_unknown_fields_are_ignored_and_not_stored(self, chat: CheckedClient) -> None:
        frames = await chat.ask("Recommend a shonen manga", "u1", extra={"nested": [1, 2]}, admin=True,
                                page={"current_asin": "B0XXXXXXXX", "evil": "x" * 500, "__proto__": {"a": 1},
                                      "store_section": "shonen"})
        assert frames[-1]["type"] == "completed"
        turn = await _user_turn("u1")
        assert set(turn.page) <= set(PAGE_FIELDS) and "evil" not in json.dumps(turn.page)

    async def test_oversized_page_lists_are_cut(self, chat: CheckedClient) -> None:
        page = {"browsing_history": [f"B0{n:08d}" for n in range(500)], "cart_asins": ["B0" + "9" * 5_000, 7, None],
                "store_section": "s" * 5_000}
        assert (await chat.ask("What is in my cart?", "u2", page=page))[-1]["type"] == "completed"
        turn = await _user_turn("u2")
        assert len(turn.page["browsing_history"]) <= 20 and turn.page["cart_asins"] == ["B0" + "9" * 98]
        assert len(turn.page["store_section"]) <= 100


class ControlCharacterTests:
    async def test_control_characters_are_stripped_before_the_turn_is_saved(self, chat: CheckedClient) -> None:
        text = "Recommend\x00 a \x1b[31mshonen\x1b[0m manga\x07\x7f\x08 please\tnow\r\n"
        assert (await chat.ask(text, "c1", page={"store_section": "sho\x00nen"}))[-1]["type"] == "completed"
        turn = await _user_turn("c1")
        assert not any(ord(ch) < 32 and ch not in "\t\n\r" or ord(ch) == 127 for ch in turn.text), repr(turn.text)
        assert "shonen" in turn.text and turn.page["store_section"] == "shonen"

    @pytest.mark.parametrize("text", ["\x00\x01\x02", "\x1b\x1b", " \x00 \t\n "])
    async def test_text_of_only_control_characters_is_empty(self, chat: CheckedClient, text: str) -> None:
        await _error(chat, {"type": "message", "id": "c2", "text": text}, code="invalid_message", message_id="c2")
        await _still_answers(chat)

    async def test_lone_surrogate_in_the_text_is_invalid_not_internal(self, chat: CheckedClient) -> None:
        # Valid JSON ("\ud800" is an escape), valid UTF-8 on the wire, but not a character: it cannot be
        # encoded for the database or the socket. It must be refused at the edge like any bad text.
        await chat.send('{"type": "message", "id": "s1", "text": "Naruto \\ud800 please"}')
        frames = await chat.until("completed", "error")
        assert frames[-1]["type"] == "completed" or frames[-1]["code"] == "invalid_message", frames[-1]
        await _still_answers(chat)


class LongUnicodeTests:
    @pytest.mark.parametrize("unit", ["😀", "漢", "e\u0301", "a"])
    async def test_message_at_the_character_limit_is_answered_promptly(self, chat: CheckedClient, settings,  # type: ignore[no-untyped-def]
                                                                      unit: str) -> None:
        text = (unit * settings.CHAT_MAX_MESSAGE_CHARS)[: settings.CHAT_MAX_MESSAGE_CHARS]
        started = time.monotonic()
        frames = await chat.ask(text, "l1")
        assert frames[-1]["type"] == "completed"
        assert time.monotonic() - started < 5
        assert (await _user_turn("l1")).text == text

    async def test_one_character_over_is_too_long(self, chat: CheckedClient, settings) -> None:  # type: ignore[no-untyped-def]
        await _error(chat, {"type": "message", "id": "l2", "text": "😀" * (settings.CHAT_MAX_MESSAGE_CHARS + 1)},
                     code="too_long", message_id="l2")
        await _still_answers(chat)

    async def test_mixed_scripts_and_right_to_left_marks(self, chat: CheckedClient) -> None:
        text = "おすすめの\u202eanahs\u202c manga? مانغا 漫画 \u200b\u200d👨‍👩‍👧 " * 20
        assert (await chat.ask(text, "l3"))[-1]["type"] == "completed"


class FloodTests:
    async def test_per_connection_limit_answers_rate_limited_with_retry_after(self, demo_catalog: None,
                                                                              settings) -> None:  # type: ignore[no-untyped-def]
        settings.CHAT_RATE_LIMIT_PER_CONNECTION = 3
        settings.CHAT_RATE_LIMIT_PER_IP = 1_000
        chat = await open_checked()
        for n in range(3):
            assert (await chat.ask("Recommend a shonen manga", f"f{n}"))[-1]["type"] == "completed"
        error = await _error(chat, {"type": "message", "id": "f3", "text": "One more"}, code="rate_limited",
                             message_id="f3")
        assert 0 < error["retry_after"] <= settings.CHAT_RATE_LIMIT_WINDOW_SECONDS
        assert (await chat.ping())[-1] == {"type": "pong"}  # still up, still talking
        other = await open_checked()  # the limit is this connection's, not the IP's
        assert (await other.ask("Recommend a seinen manga", "o1"))[-1]["type"] == "completed"
        await chat.ws.disconnect()
        await other.ws.disconnect()

    async def test_waiting_retry_after_is_enough(self, demo_catalog: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.CHAT_RATE_LIMIT_PER_CONNECTION = 1
        settings.CHAT_RATE_LIMIT_WINDOW_SECONDS = 1
        chat = await open_checked()
        assert (await chat.ask("Hello", "r1"))[-1]["type"] == "completed"
        error = await _error(chat, {"type": "message", "id": "r2", "text": "Hello again"}, code="rate_limited",
                             message_id="r2")
        await asyncio.sleep(error["retry_after"] + 0.05)
        assert (await chat.ask("Hello again", "r2"))[-1]["type"] == "completed"
        await chat.ws.disconnect()

    async def test_per_ip_limit_spans_connections_and_spares_other_ips(self, demo_catalog: None,
                                                                       settings) -> None:  # type: ignore[no-untyped-def]
        settings.CHAT_RATE_LIMIT_PER_CONNECTION = 1_000
        settings.CHAT_RATE_LIMIT_PER_IP = 4

        async def from_ip(ip: str) -> CheckedClient:
            from mangaassist.asgi import application

            communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[ORIGIN])
            communicator.scope["client"] = (ip, 50_000)
            connected, _ = await communicator.connect()
            assert connected
            from tests.conftest import ChatClient

            return CheckedClient(ChatClient(communicator))

        first, second = await from_ip("203.0.113.7"), await from_ip("203.0.113.7")
        for n in range(2):
            assert (await first.ask("Hello", f"a{n}"))[-1]["type"] == "completed"
            assert (await second.ask("Hello", f"b{n}"))[-1]["type"] == "completed"
        third = await from_ip("203.0.113.7")
        error = await _error(third, {"type": "message", "id": "c0", "text": "Hello"}, code="rate_limited",
                             message_id="c0")
        assert 0 < error["retry_after"] <= settings.CHAT_RATE_LIMIT_WINDOW_SECONDS
        elsewhere = await from_ip("198.51.100.9")
        assert (await elsewhere.ask("Hello", "d0"))[-1]["type"] == "completed"
        for client in (first, second, third, elsewhere):
            await client.ws.disconnect()

    async def test_a_burst_of_messages_gets_one_answer_and_busy_or_rate_limited_for_the_rest(
        self, chat: CheckedClient
    ) -> None:
        backend = GatedBackend()
        ChatConsumer.orchestrator = Orchestrator(backend=backend)
        for n in range(40):
            await chat.send({"type": "message", "id": f"burst{n}", "text": "Recommend a shonen manga"})
        frames: list[dict] = []
        while not (any(f["type"] == "delta" for f in frames) and sum(f["type"] == "error" for f in frames) >= 39):
            frames.append(await chat.receive())  # every message handled before the first answer may end
        backend.release.set()
        frames += await chat.until("completed")
        frames += await chat.ping()
        acks = [f["id"] for f in frames if f["type"] == "ack"]
        refused = {f["id"]: f["code"] for f in frames if f["type"] == "error"}
        assert acks == ["burst0"]
        assert set(refused) == {f"burst{n}" for n in range(1, 40)}
        assert set(refused.values()) <= {"busy", "rate_limited"}
        assert backend.calls == 1

    async def test_a_flood_of_bad_frames_does_not_close_the_socket(self, chat: CheckedClient) -> None:
        for n in range(300):
            await chat.send(["{", "[]", '{"type": "dance"}', '{"type": "stop", "id": "nope"}'][n % 4])
        codes = [(await chat.receive())["code"] for _ in range(300)]
        assert set(codes) == {"invalid_json", "invalid_message"}
        await _still_answers(chat)


class BusyTests:
    async def test_second_message_while_answering_is_busy_and_not_answered_later(self, chat: CheckedClient) -> None:
        backend = GatedBackend()
        ChatConsumer.orchestrator = Orchestrator(backend=backend)
        await chat.send({"type": "message", "id": "b1", "text": "Recommend a shonen manga"})
        await chat.until("delta")
        await _error(chat, {"type": "message", "id": "b2", "text": "And a seinen one?"}, code="busy", message_id="b2")
        await _error(chat, {"type": "resume", "id": "b1", "after": 0}, code="busy", message_id="b1")
        backend.release.set()
        frames = await chat.until("completed")
        assert frames[-1]["id"] == "b1"
        await chat.ping()
        assert backend.calls == 1
        assert [t[2] for t in await saved_turns(2)] == ["b1", "b1"]  # b2 was never saved nor answered

    async def test_busy_frames_do_not_count_against_the_rate_limit(self, demo_catalog: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.CHAT_RATE_LIMIT_PER_CONNECTION = 2
        backend = GatedBackend()
        ChatConsumer.orchestrator = Orchestrator(backend=backend)
        chat = await open_checked()
        await chat.send({"type": "message", "id": "k0", "text": "Hello"})
        await chat.until("delta")
        for n in range(10):
            await _error(chat, {"type": "message", "id": f"k{n + 1}", "text": "Hello"}, code="busy",
                         message_id=f"k{n + 1}")
        backend.release.set()
        await chat.until("completed")
        assert (await chat.ask("Hello again", "k20"))[-1]["type"] == "completed"
        await chat.ws.disconnect()

    async def test_a_message_sent_right_after_completed_keeps_one_answer_in_flight(self, chat: CheckedClient) -> None:
        """`completed` frees the socket for the next message while the last answer is still being saved.

        The next message waits for that save; when the save ends, the old answer's clean-up must
        not mark the socket idle while the new answer is streaming.
        """
        assert (await chat.ask("Recommend a shonen manga", "q1"))[-1]["type"] == "completed"
        backend = GatedBackend()
        ChatConsumer.orchestrator = Orchestrator(backend=backend)
        await chat.send({"type": "message", "id": "q2", "text": "And a seinen one?"})  # at once, as a fast typist
        await chat.until("delta")  # q2 is streaming (so q1's save is over)
        await chat.send({"type": "message", "id": "q3", "text": "And a josei one?"})
        meanwhile = await chat.ping()
        backend.release.set()
        await chat.until("completed")
        refused = [(f["code"], f["id"]) for f in meanwhile if f["type"] == "error"]
        assert refused == [("busy", "q3")], meanwhile

    async def test_stop_right_after_completed_is_not_a_second_ending(self, chat: CheckedClient) -> None:
        await chat.send({"type": "message", "id": "t1", "text": "Recommend a shonen manga"})
        await chat.until("completed")
        await chat.send({"type": "stop", "id": "t1"})  # crossed on the wire with `completed`
        frames = await chat.ping()  # CheckedClient fails on a `stopped` after `completed`
        assert [f["type"] for f in frames] in (["pong"], ["error", "pong"]), frames


class OriginTests:
    @pytest.mark.parametrize("headers", [
        [(b"origin", b"http://evil.example")],
        [(b"origin", b"http://127.0.0.1.evil.example")],
        [(b"origin", b"http://evil.example/127.0.0.1")],
        [(b"origin", b"null")],
        [(b"origin", b"")],
        [],  # no Origin at all (not a browser): refused too
    ])
    async def test_cross_origin_socket_is_refused(self, demo_catalog: None, headers: list) -> None:
        from mangaassist.asgi import application

        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        connected, _ = await communicator.connect()
        assert not connected
        await communicator.disconnect()

    @pytest.mark.parametrize("origin", [b"http://127.0.0.1:8000", b"http://localhost:8000", b"https://localhost"])
    async def test_the_stores_own_origins_are_accepted(self, demo_catalog: None, origin: bytes) -> None:
        chat = await open_checked(headers=[(b"origin", origin)])
        assert (await chat.ping())[-1] == {"type": "pong"}
        await chat.ws.disconnect()


class ClientMetricsTests:
    @staticmethod
    def _observed() -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value("mangaassist_client_first_token_seconds_count") or 0.0

    @staticmethod
    async def _record(message_id: str, timeout: float = 3.0) -> TurnRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = await sync_to_async(TurnRecord.objects.filter(client_message_id=message_id).first)()
            if record is not None or time.monotonic() > deadline:
                assert record is not None, f"no TurnRecord for {message_id}"
                return record
            await asyncio.sleep(0.02)

    @classmethod
    async def _timings(cls, message_id: str, expected: tuple, timeout: float = 3.0) -> tuple:
        """The record's browser timings once they are `expected` (written off the receive loop), or at the timeout."""
        if expected == (None, None):
            await asyncio.sleep(0.3)  # time for a write that must not happen
        deadline = time.monotonic() + timeout
        while True:
            record = await cls._record(message_id)
            found = (record.client_first_token_ms, record.client_total_ms)
            if found == expected or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.02)

    @pytest.mark.parametrize("values", [
        '"first_token_ms": -5, "total_ms": -1',
        '"first_token_ms": NaN, "total_ms": Infinity',
        '"first_token_ms": -Infinity, "total_ms": 1e308',
        '"first_token_ms": 1e999, "total_ms": 99999999999999999999999999999999',
        '"first_token_ms": "120", "total_ms": [300]',
        '"first_token_ms": true, "total_ms": null',
        '"first_token_ms": 300001, "total_ms": 86400000',
    ])
    async def test_absurd_values_are_ignored(self, chat: CheckedClient, values: str) -> None:
        assert (await chat.ask("Recommend a shonen manga", "cm1"))[-1]["type"] == "completed"
        await self._record("cm1")  # saved (the race with the save is the test below)
        before = self._observed()
        await chat.send('{"type": "client_metrics", "id": "cm1", ' + values + "}")
        assert (await chat.ping()) == [{"type": "pong"}]  # no reply, no error
        assert await self._timings("cm1", (None, None)) == (None, None)
        assert self._observed() == before

    async def test_total_before_first_token_keeps_only_the_first_token(self, chat: CheckedClient) -> None:
        await chat.ask("Hello", "cm2")
        await self._record("cm2")
        await chat.send({"type": "client_metrics", "id": "cm2", "first_token_ms": 500, "total_ms": 100})
        await chat.ping()
        assert await self._timings("cm2", (500, None)) == (500, None)

    async def test_only_the_sockets_own_answers_count_and_only_once(self, chat: CheckedClient) -> None:
        await chat.ask("Hello", "cm3")
        await self._record("cm3")
        before = self._observed()
        await chat.send({"type": "client_metrics", "id": "not-mine", "first_token_ms": 120, "total_ms": 300})
        await chat.send({"type": "client_metrics", "id": "cm3", "first_token_ms": 120, "total_ms": 300})
        await chat.send({"type": "client_metrics", "id": "cm3", "first_token_ms": 1, "total_ms": 2})
        assert await chat.ping() == [{"type": "pong"}]
        assert await self._timings("cm3", (120, 300)) == (120, 300)
        assert self._observed() == before + 1

    async def test_timings_reported_right_after_completed_are_kept(self, chat: CheckedClient) -> None:
        for n in range(8):  # what the widget does: report as soon as `completed` arrives, before the save
            assert (await chat.ask("Recommend a shonen manga", f"now{n}"))[-1]["type"] == "completed"
            await chat.send({"type": "client_metrics", "id": f"now{n}", "first_token_ms": 100 + n, "total_ms": 900})
        await chat.ping()
        for n in range(8):
            assert await self._timings(f"now{n}", (100 + n, 900)) == (100 + n, 900), f"the timing of now{n} was lost"
