"""ChatConsumer: speaks the WebSocket protocol of DESIGN.md §4 and nothing else.

It validates frames, hands messages to the orchestrator and turns the
orchestrator's events into frames. One answer at a time per socket; `stop` and a
closed socket cancel the answer (and with it the upstream model call).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import metrics, protocol, services
from .assembly import TurnInput
from .orchestrator import Orchestrator
from .protocol import ClientMessage, ProtocolError
from .ratelimit import ConnectionLimiter, ip_check
from .threads import run_db

logger = logging.getLogger(__name__)


class FrameSink:
    """Turns orchestrator events into frames on this socket."""

    def __init__(self, consumer: "ChatConsumer", message_id: str) -> None:
        self.consumer = consumer
        self.message_id = message_id
        self.first_delta = asyncio.Event()

    async def delta(self, index: int, text: str) -> None:
        self.first_delta.set()
        await self.consumer.send(protocol.frame("delta", id=self.message_id, index=index, text=text))

    async def completed(self, text: str, products: list[dict], metrics: dict) -> None:
        self.first_delta.set()
        self.consumer.answering = False  # the customer may send the next message now
        await self.consumer.send(protocol.frame("completed", id=self.message_id, text=text, products=products,
                                                metrics=metrics))

    async def failed(self, code: str, message: str, retry_after: float | None = None) -> None:
        self.first_delta.set()
        self.consumer.answering = False
        await self.consumer.send_error(code, message, self.message_id, retry_after)


class ChatConsumer(AsyncWebsocketConsumer):
    orchestrator: Orchestrator | None = None  # one per process, created on first use

    async def connect(self) -> None:
        self.conversation_id: uuid.UUID | None = None
        self.session_key = await self._session_key()
        self.answer_task: asyncio.Task | None = None
        self.answer_id: str | None = None
        self.answering = False  # from the message until its completed/error/stopped frame
        self.answered_ids: set[str] = set()
        self.limiter = ConnectionLimiter(settings.CHAT_RATE_LIMIT_PER_CONNECTION, settings.CHAT_RATE_LIMIT_WINDOW_SECONDS)
        self.client_ip = (self.scope.get("client") or ("unknown", 0))[0]
        await self.accept()
        requested = self._query_param("conversation")
        if requested:
            try:
                conversation = await run_db(services.check_conversation_open, session_key=self.session_key,
                                            conversation_param=requested)
                self.conversation_id = conversation.id
            except services.ConversationNotFound:
                await self.send_error("conversation_not_found",
                                      "That conversation does not exist for this browser; a new one will start.")

    async def disconnect(self, code: int) -> None:
        if self.answer_task and not self.answer_task.done():
            self.answer_task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        received_at = time.perf_counter()
        try:
            frame = protocol.check_frame(text_data, bytes_data)
            kind = frame["type"]
            if kind == "ping":
                await self.send(protocol.frame("pong"))
            elif kind == "message":
                await self._on_message(protocol.check_message(frame), received_at)
            elif kind == "stop":
                await self._on_stop(protocol.check_id(frame))
            elif kind == "resume":
                await self._on_resume(*protocol.check_resume(frame))
            elif kind == "client_metrics":
                await self._on_client_metrics(protocol.check_client_metrics(frame))
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message, exc.message_id)

    async def send_error(self, code: str, message: str, message_id: str | None = None,
                         retry_after: float | None = None) -> None:
        metrics.SOCKET_ERRORS.labels(code).inc()
        await self.send(protocol.error_frame(code, message, message_id, retry_after))

    # --- frames ------------------------------------------------------------------------------

    async def _on_message(self, message: ClientMessage, received_at: float) -> None:
        if self.answering:
            raise ProtocolError("busy", "Wait for the current answer to finish, or stop it first.", message.id)
        wait = self.limiter.check() or await asyncio.to_thread(ip_check, self.client_ip)
        if wait:
            await self.send_error("rate_limited", "Too many messages; please wait a moment.", message.id, wait)
            return
        self.answer_id = message.id
        previous = self.answer_task
        self.answering = True
        self.answer_task = asyncio.create_task(self._answer(message, received_at, previous))

    async def _answer(self, message: ClientMessage, received_at: float, previous: asyncio.Task | None) -> None:
        sink = FrameSink(self, message.id)
        keepalive = asyncio.create_task(self._keepalive(sink))
        try:
            if previous is not None and not previous.done():
                # The last answer is out but still being saved: its turn must be in the memory of this one.
                await asyncio.wait([previous])
            if self.conversation_id is None:
                conversation = await run_db(services.conversation_open, session_key=self.session_key, conversation_id=None)
                self.conversation_id = conversation.id
            recorded = await run_db(services.user_turn_record, conversation_id=self.conversation_id,
                                    client_message_id=message.id, text=message.text, page=message.page)
            await self.send(protocol.frame("ack", id=message.id, conversation=str(self.conversation_id)))
            self.answered_ids.add(message.id)
            if not recorded.created:
                await self._replay_saved_answer(message.id, recorded.answer)
                return
            turn = TurnInput(self.conversation_id, message.id, message.text, message.page, self.session_key)
            await self._orchestrator().answer(turn, sink, received_at=received_at)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one broken answer must not close the socket
            logger.exception("answer %s failed", message.id)
            await self.send_error("internal", "Something went wrong on our side. Please try again.", message.id)
        finally:
            self.answering = False
            keepalive.cancel()

    async def _replay_saved_answer(self, message_id: str, answer) -> None:  # type: ignore[no-untyped-def]
        """A message id seen before (a resend after a reconnect) is answered once, from the saved turn."""
        if answer is None:
            await self.send_error("busy", "This message is already being answered.", message_id)
            return
        from catalog.selectors import product_facts_by_sku

        products = await run_db(product_facts_by_sku, list(answer.product_skus))
        await self.send(protocol.frame("completed", id=message_id, text=answer.text,
                                       products=[p.card() for p in products], metrics=answer.metrics))

    async def _keepalive(self, sink: FrameSink) -> None:
        """Keep proxies from cutting the socket while the first token is slow to come."""
        while not sink.first_delta.is_set():
            try:
                await asyncio.wait_for(sink.first_delta.wait(), timeout=settings.CHAT_KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                await self.send(protocol.frame("keepalive"))

    async def _on_stop(self, message_id: str) -> None:
        if self.answer_id != message_id or not self.answer_task or self.answer_task.done():
            raise ProtocolError("invalid_message", "There is no answer in progress with that id.", message_id)
        self.answer_task.cancel()
        try:
            await self.answer_task
        except asyncio.CancelledError:
            pass
        await self.send(protocol.frame("stopped", id=message_id))

    async def _on_resume(self, message_id: str, after: int) -> None:
        raise ProtocolError("invalid_message", "There is no interrupted answer with that id to resume.", message_id)

    async def _on_client_metrics(self, reported: protocol.ClientMetrics) -> None:
        if reported.id not in self.answered_ids or self.conversation_id is None:
            return  # only the socket's own answers count, once each
        self.answered_ids.discard(reported.id)
        if reported.first_token_ms is not None:
            metrics.CLIENT_FIRST_TOKEN.observe(reported.first_token_ms / 1000)
        if reported.total_ms is not None:
            metrics.CLIENT_TOTAL.observe(reported.total_ms / 1000)
        await run_db(services.turn_record_client_timing, conversation_id=self.conversation_id,
                     client_message_id=reported.id, first_token_ms=reported.first_token_ms,
                     total_ms=reported.total_ms)

    # --- helpers -------------------------------------------------------------------------------

    @classmethod
    def _orchestrator(cls) -> Orchestrator:
        if cls.orchestrator is None:
            cls.orchestrator = Orchestrator()
        return cls.orchestrator

    async def _session_key(self) -> str:
        """The browser session's key; a socket without a session cookie gets a session of its own."""
        session = self.scope.get("session")
        if session is None:
            return f"anonymous:{uuid.uuid4()}"
        if not session.session_key:
            await run_db(session.save)
        return session.session_key

    def _query_param(self, name: str) -> str | None:
        from urllib.parse import parse_qs

        values = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get(name)
        return values[0] if values else None
