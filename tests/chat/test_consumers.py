"""The chat socket through the real ASGI application (embedded mode)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from catalog.models import Product
from chat.models import Role, Turn, TurnStatus
from tests.conftest import ORIGIN, ChatClient, open_chat, saved_turns

pytestmark = pytest.mark.django_db(transaction=True)


def _deltas(frames: list[dict]) -> list[dict]:
    return [f for f in frames if f["type"] == "delta"]


async def _session_cookie() -> tuple[bytes, bytes]:
    from django.contrib.sessions.backends.cached_db import SessionStore

    store = SessionStore()
    await sync_to_async(store.save)()
    return (b"cookie", f"sessionid={store.session_key}".encode())


class ChatProtocolTests:
    async def test_recommendation_streams_deltas_then_completed_with_catalog_products(self, chat: ChatClient) -> None:
        frames = await chat.ask("Recommend a shonen manga like Dragon Ball", "m1")

        assert frames[0]["type"] == "ack" and frames[0]["id"] == "m1" and frames[0]["conversation"]
        deltas = _deltas(frames)
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
        assert len(deltas) > 10
        completed = frames[-1]
        assert completed["type"] == "completed"
        assert completed["text"] == "".join(d["text"] for d in deltas)
        skus = [p["sku"] for p in completed["products"]]
        assert len(skus) == 3
        titles = await sync_to_async(lambda: dict(Product.objects.filter(sku__in=skus).values_list("sku", "title_en")))()
        assert set(titles) == set(skus)
        for product in completed["products"]:
            assert product["title"] in completed["text"]
            assert product["title"] == titles[product["sku"]]
            assert product["url"].endswith(f"/products/{product['sku']}/")
        assert "Dragon Ball" not in [p["title"] for p in completed["products"]]
        metrics = completed["metrics"]
        assert metrics["intent"] == "recommendation"
        assert metrics["prompt_tokens"] > 0 and metrics["output_tokens"] > 0
        assert 0 < metrics["compression_ratio"] <= 1
        assert metrics["first_token_ms"] <= metrics["total_ms"]

    async def test_products_follow_the_order_the_answer_presents_them(self, chat: ChatClient) -> None:
        completed = (await chat.ask("Recommend something like Naruto", "m1"))[-1]
        positions = [completed["text"].find(p["title"]) for p in completed["products"]]
        assert positions == sorted(positions) and min(positions) >= 0

    async def test_follow_up_resolves_the_first_one_from_the_previous_answer(self, chat: ChatClient) -> None:
        first = (await chat.ask("Recommend a shonen manga like Dragon Ball", "m1"))[-1]
        follow = (await chat.ask("Tell me more about the first one", "m2"))[-1]
        assert follow["metrics"]["intent"] == "product_question"
        assert [p["sku"] for p in follow["products"]] == [first["products"][0]["sku"]]

    async def test_user_turn_is_saved_and_answer_saved_complete(self, chat: ChatClient) -> None:
        await chat.ask("Is One Piece in stock?", "m1")
        turns = await saved_turns(2)
        assert turns == [(Role.USER, TurnStatus.COMPLETE, "m1"), (Role.ASSISTANT, TurnStatus.COMPLETE, "m1")]

    async def test_ping_gets_pong(self, chat: ChatClient) -> None:
        await chat.send({"type": "ping"})
        assert await chat.receive() == {"type": "pong"}

    async def test_frames_do_not_wait_for_djangos_sync_thread(self, chat: ChatClient) -> None:
        # asgiref's one sync thread (every thread-sensitive call outside a request) may be busy for long,
        # say on a slow query: no frame of the socket may queue behind it.
        release = threading.Event()
        busy = asyncio.ensure_future(sync_to_async(lambda: release.wait(10))())
        try:
            await asyncio.sleep(0.05)
            await chat.send({"type": "ping"})
            assert await chat.receive(timeout=2) == {"type": "pong"}
            frames = await chat.ask("Is One Piece in stock?", "m1")
            assert frames[0]["type"] == "ack" and frames[-1]["type"] == "completed"
            assert not busy.done()  # all of it while the thread was held
        finally:
            release.set()
            await busy


class BadFrameTests:
    @pytest.mark.parametrize(
        ("frame", "code"),
        [
            ("this is not json", "invalid_json"),
            ('{"type": "message", "text": "no id"}', "invalid_message"),
            ('{"type": "dance", "id": "x1"}', "invalid_message"),
            ('["a", "list"]', "invalid_message"),
            ('{"type": "message", "id": "x1", "text": 42}', "invalid_message"),
            ('{"type": "message", "id": "x1", "text": "   "}', "invalid_message"),
            ('{"type": "message", "id": "x1", "text": "hi", "page": "not an object"}', "invalid_message"),
        ],
    )
    async def test_bad_frame_gets_error_and_socket_keeps_answering(self, chat: ChatClient, frame: str, code: str) -> None:
        await chat.send(frame)
        error = await chat.receive()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        frames = await chat.ask("Recommend a seinen manga", "ok1")
        assert frames[-1]["type"] == "completed"

    async def test_text_over_the_limit_is_too_long(self, chat: ChatClient, settings) -> None:  # type: ignore[no-untyped-def]
        await chat.send({"type": "message", "id": "long1", "text": "a" * (settings.CHAT_MAX_MESSAGE_CHARS + 1)})
        error = await chat.receive()
        assert (error["type"], error["code"], error["id"]) == ("error", "too_long", "long1")
        assert (await chat.ask("Hello", "ok2"))[-1]["type"] == "completed"

    async def test_frame_over_the_byte_limit_is_too_long(self, chat: ChatClient, settings) -> None:  # type: ignore[no-untyped-def]
        await chat.send("x" * (settings.CHAT_MAX_FRAME_BYTES + 10))
        assert (await chat.receive())["code"] == "too_long"

    async def test_second_message_while_answering_is_busy(self, chat: ChatClient) -> None:
        from chat.consumers import ChatConsumer
        from chat.llm.simulated import SimulatedBackend
        from chat.orchestrator import Orchestrator

        ChatConsumer.orchestrator = Orchestrator(backend=SimulatedBackend(profile="bedrock", seed=1))
        await chat.send({"type": "message", "id": "a1", "text": "Recommend a shonen manga"})
        await chat.send({"type": "message", "id": "a2", "text": "And a seinen one?"})
        frames = await chat.until("completed")
        busy = [f for f in frames if f["type"] == "error"]
        assert [(f["code"], f["id"]) for f in busy] == [("busy", "a2")]
        assert frames[-1]["id"] == "a1"

    async def test_cross_origin_socket_is_refused(self, demo_catalog: None) -> None:
        from mangaassist.asgi import application

        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", b"http://evil.example")])
        connected, _ = await communicator.connect()
        assert not connected
        await communicator.disconnect()


class ConversationTests:
    async def test_stop_cancels_the_answer_and_saves_it_partial(self, demo_catalog: None) -> None:
        from chat.consumers import ChatConsumer
        from chat.llm.simulated import SimulatedBackend
        from chat.orchestrator import Orchestrator

        ChatConsumer.orchestrator = Orchestrator(backend=SimulatedBackend(profile="bedrock", seed=1))
        chat = await open_chat()
        await chat.send({"type": "message", "id": "s1", "text": "Recommend a shonen manga like Dragon Ball"})
        await chat.until("delta")
        await chat.send({"type": "stop", "id": "s1"})
        frames = await chat.until("stopped")
        assert frames[-1] == {"type": "stopped", "id": "s1"}
        assert not [f for f in frames if f["type"] == "completed"]
        await saved_turns(2)
        answer = await sync_to_async(Turn.objects.get)(role=Role.ASSISTANT, client_message_id="s1")
        assert answer.status == TurnStatus.PARTIAL and answer.failure_reason == "stopped" and answer.text
        await chat.ws.disconnect()

    async def test_conversation_resumes_on_a_new_socket_of_the_same_session(self, demo_catalog: None) -> None:
        cookie = await _session_cookie()
        first = await open_chat(headers=[ORIGIN, cookie])
        frames = await first.ask("Recommend a shonen manga like Dragon Ball", "c1")
        conversation = frames[0]["conversation"]
        shown = frames[-1]["products"]
        await saved_turns(2)  # a customer reloads after the answer is saved, not within its milliseconds
        await first.ws.disconnect()

        second = await open_chat(f"/ws/chat/?conversation={conversation}", headers=[ORIGIN, cookie])
        frames = await second.ask("How much is the second one?", "c2")
        assert frames[0]["conversation"] == conversation
        assert [p["sku"] for p in frames[-1]["products"]] == [shown[1]["sku"]]
        await second.ws.disconnect()

    async def test_another_sessions_conversation_is_not_resumed(self, demo_catalog: None) -> None:
        first = await open_chat(headers=[ORIGIN, await _session_cookie()])
        conversation = (await first.ask("Hello", "c1"))[0]["conversation"]
        await first.ws.disconnect()

        stranger = await open_chat(f"/ws/chat/?conversation={conversation}", headers=[ORIGIN, await _session_cookie()])
        error = await stranger.receive()
        assert error["type"] == "error" and error["code"] == "conversation_not_found"
        frames = await stranger.ask("Hello", "c2")
        assert frames[0]["conversation"] != conversation
        await stranger.ws.disconnect()

    async def test_duplicate_message_id_is_answered_once(self, chat: ChatClient) -> None:
        first = (await chat.ask("Recommend a seinen manga", "d1"))[-1]
        await saved_turns(2)
        again = await chat.ask("Recommend a seinen manga", "d1")
        assert [f["type"] for f in again] == ["ack", "completed"]
        assert again[-1]["text"] == first["text"]
        count = await sync_to_async(Turn.objects.filter(client_message_id="d1").count)()
        assert count == 2  # one user turn, one answer

    async def test_the_model_reads_the_prompt_while_the_message_is_committed_and_speaks_after_the_ack(
            self, demo_catalog: None, monkeypatch: pytest.MonkeyPatch) -> None:
        """The commit is off the first token's path, but no word of the answer precedes the saved message."""
        import threading
        import time

        from chat import services
        from chat.consumers import ChatConsumer
        from chat.llm.simulated import SimulatedBackend
        from chat.orchestrator import Orchestrator

        save = services.user_turn_record
        model_called = threading.Event()
        seen: dict[str, float] = {}

        def slow_save(**kwargs):  # type: ignore[no-untyped-def]
            seen["model called before the commit"] = model_called.wait(timeout=5)
            recorded = save(**kwargs)
            seen["committed"] = time.perf_counter()
            return recorded

        class Recording(SimulatedBackend):
            def stream(self, request):  # type: ignore[no-untyped-def]
                model_called.set()
                return super().stream(request)

        monkeypatch.setattr(services, "user_turn_record", slow_save)
        ChatConsumer.orchestrator = Orchestrator(backend=Recording(profile="instant", seed=1))
        chat = await open_chat()
        frames = await chat.ask("Recommend a seinen manga", "w1")
        assert seen["model called before the commit"] is True
        assert [f["type"] for f in frames][:2] == ["ack", "delta"] and frames[-1]["type"] == "completed"
        assert frames[-1]["metrics"]["intent"] == "recommendation"
        await saved_turns(2)
        await chat.ws.disconnect()

    async def test_a_message_answered_before_closes_the_model_call_it_started_and_sends_no_delta(
            self, chat: ChatClient, monkeypatch: pytest.MonkeyPatch) -> None:
        from chat.consumers import ChatConsumer

        first = (await chat.ask("Recommend a seinen manga", "d2"))[-1]
        await saved_turns(2)
        backend = ChatConsumer.orchestrator.backend
        closed = []
        stream = backend.stream

        async def watched(request):  # type: ignore[no-untyped-def]
            try:
                async for event in stream(request):
                    yield event
            finally:
                closed.append(True)

        monkeypatch.setattr(backend, "stream", watched)
        again = await chat.ask("Recommend a seinen manga", "d2")
        assert [f["type"] for f in again] == ["ack", "completed"] and again[-1]["text"] == first["text"]
        assert closed == [True]  # the model was asked while the message was checked, then let go

    async def test_a_first_message_that_could_not_be_saved_leaves_no_phantom_conversation(
            self, demo_catalog: None, monkeypatch: pytest.MonkeyPatch) -> None:
        """The first message creates the conversation with it: if that save fails, the next one starts it."""
        from django.db import OperationalError

        from chat import services
        from chat.models import Conversation

        save = services.user_turn_record
        calls = []

        def failing_once(**kwargs):  # type: ignore[no-untyped-def]
            calls.append(kwargs)
            if len(calls) == 1:
                raise OperationalError("database is locked")
            return save(**kwargs)

        monkeypatch.setattr(services, "user_turn_record", failing_once)
        chat = await open_chat()
        frames = await chat.ask("Recommend a seinen manga", "f1")
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == "internal"
        assert not [f for f in frames if f["type"] in ("ack", "delta")]  # nothing answered an unsaved message
        frames = await chat.ask("Recommend a seinen manga", "f2")
        assert frames[0]["type"] == "ack" and frames[-1]["type"] == "completed"
        assert await sync_to_async(Conversation.objects.filter(id=frames[0]["conversation"]).exists)()
        assert calls[1]["new_conversation_session"] is not None
        await chat.ws.disconnect()


class FrameSinkTests:
    async def test_a_delta_that_arrives_as_the_answer_is_cancelled_is_neither_sent_nor_logged(self) -> None:
        """Python 3.11's asyncio.wait_for can return the model's next delta and drop a cancellation
        (stop, closed socket) that came at the same moment; the sink honours it instead."""
        import asyncio

        from chat import streamlog
        from chat.consumers import FrameSink

        sent: list[str] = []

        class Socket:
            async def send(self, frame: str) -> None:
                sent.append(frame)

        log = streamlog.StreamLogWriter.start(streamlog.message_key("c", "m1"), text="q", page={})
        sink = FrameSink(Socket(), "m1", log, asyncio.Event())  # type: ignore[arg-type]

        async def answer() -> None:
            await sink.delta(0, "One")
            asyncio.current_task().cancel()  # what wait_for leaves behind: cancelling, yet a delta in hand
            await sink.delta(1, " two")

        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(answer())
        assert len(sent) == 1 and log.texts == ["One"]
        log.end()
        await log.ended()



class ClientTimingTests:
    async def test_a_report_sent_the_moment_completed_arrives_reaches_the_answers_record(
            self, demo_catalog: None, monkeypatch: pytest.MonkeyPatch) -> None:
        import asyncio
        import time

        from chat import services
        from chat.models import TurnRecord

        save = services.assistant_turn_record

        def slow_save(**kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.2)  # a busy database: the record lands well after `completed`
            return save(**kwargs)

        monkeypatch.setattr(services, "assistant_turn_record", slow_save)

        chat = await open_chat()
        for n in range(3):
            done = (await chat.ask("Recommend a seinen manga", f"t{n}"))[-1]
            assert done["type"] == "completed"
            # At once, as the widget does: the record may not be saved yet.
            await chat.send({"type": "client_metrics", "id": f"t{n}", "first_token_ms": 210.0 + n, "total_ms": 900.0})
        await chat.send({"type": "ping"})
        assert (await chat.receive())["type"] == "pong"
        for _ in range(300):
            values = await sync_to_async(lambda: sorted(TurnRecord.objects.exclude(client_first_token_ms=None)
                                                        .values_list("client_first_token_ms", flat=True)))()
            if len(values) == 3:
                break
            await asyncio.sleep(0.02)
        await chat.ws.disconnect()
        assert values == [210.0, 211.0, 212.0]
