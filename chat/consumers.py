"""ChatConsumer: speaks the WebSocket protocol of DESIGN.md §4 and nothing else.

It validates frames, hands messages to the orchestrator and turns the
orchestrator's events into frames. One answer at a time per socket; `stop` and a
closed socket cancel the answer (and with it the upstream model call): the
orchestrator saves what was said.

Every delta also goes to the answer's stream log (chat.streamlog), which any web
process can read. `resume {id, after}` replays the logged deltas after `after` and,
if the answer did not end, continues it live: the model writes on from the logged
text (an assistant prefill), deltas numbered on from the logged ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Coroutine

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import metrics, protocol, selectors, services, streamlog
from .assembly import TurnInput
from .models import TurnStatus
from .orchestrator import Orchestrator
from .protocol import ClientMessage, ProtocolError
from .ratelimit import ConnectionLimiter, ip_check
from .streamlog import StreamLogWriter
from .threads import run_background, run_cache, run_db

logger = logging.getLogger(__name__)

LOG_APPEAR_SECONDS = 1.0  # a question saved but no log yet: how long its producer gets to start the log
CLIENT_TIMING_WAIT_SECONDS = 10.0  # a browser report waits at most this long for its answer to be saved
FOLLOW_POLL_SECONDS = 0.05  # following an answer produced on another socket: how often the log is read
INTERNAL_MESSAGE = "Something went wrong on our side. Please try again."


def _log_lost_commit(task: asyncio.Task) -> None:
    """A message whose save failed after its answer was cancelled (nobody awaits it then): say so."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("saving a customer message failed", exc_info=task.exception())


# More characters than a killed producer can have sent and not logged (a batch is written every
# streamlog.FLUSH_SECONDS; an answer is at most a few thousand characters).
MAX_UNLOGGED_CHARS = 20_000


class FrameSink:
    """Turns orchestrator events into frames on this socket, and logs them in the answer's stream log.

    Each delta is queued to the log before it is sent, so the log holds every delta the
    browser may have seen. Deltas up to `sent_through` are logged but not sent: a
    resumed browser has them already.

    A browser can be ahead of the log: its producer was killed (SIGKILL) between sending
    deltas and writing their batch. Their text is lost with it, and the continuation's
    deltas need not split where the lost ones did. Given how many characters the browser
    has (`chars`), the seam is placed by text: the continuation's first characters stand
    for the browser's unlogged deltas (logged as those deltas), and what follows is
    numbered on from the browser's last delta.
    """

    def __init__(self, consumer: "ChatConsumer", message_id: str, log: StreamLogWriter | None, progress: asyncio.Event,
                 *, sent_through: int = -1, chars: int | None = None) -> None:
        self.consumer = consumer
        self.message_id = message_id
        self.log = log
        self.progress = progress
        self.sent_through = sent_through
        # Characters the browser has beyond the log (None: no seam to place, or no `chars` to place it by).
        # A claim no browser can make (fewer characters than deltas beyond the log, or more than any
        # unlogged batch holds) keeps the index rule, whose cost does not grow with what is claimed.
        self._unseen: int | None = None
        if log is not None and chars is not None:
            ahead, unseen = sent_through - log.count + 1, chars - len(log.text)
            if 0 < ahead <= unseen <= MAX_UNLOGGED_CHARS:
                self._unseen = unseen
        self._held = ""  # the continuation's text, until it covers the browser's unlogged characters
        self._shift = 0  # continuation index -> index the browser expects, once past the seam

    async def delta(self, index: int, text: str) -> None:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Cancelled (stop, closed socket) while the model's next delta arrived: Python 3.11's
            # asyncio.wait_for then returns the delta and drops the cancellation. Honour it here.
            raise asyncio.CancelledError
        self.progress.set()
        if self._unseen is not None:
            placed = self._past_seam(index, text)
            if placed is None:
                return
            index, text = placed
        index += self._shift
        if self.log is not None:
            self.log.append(index, text)
        if index > self.sent_through:
            await self.consumer.send(protocol.frame("delta", id=self.message_id, index=index, text=text))

    def _past_seam(self, index: int, text: str) -> tuple[int, str] | None:
        """Hold the continuation until it covers the characters the browser has beyond the log; then log
        those as the browser's unlogged deltas and renumber the rest after the browser's last (None: held)."""
        assert self._unseen is not None
        self._held += text
        if len(self._held) < self._unseen:
            return None
        seen, rest = self._held[:self._unseen], self._held[self._unseen:]
        self._log_seen(seen)
        self._unseen, self._held = None, ""
        if not rest:  # the next delta is the browser's next
            self._shift = self.sent_through - index
            return None
        self._shift = self.sent_through + 1 - index
        return index, rest

    def _log_seen(self, seen: str) -> None:
        """`seen` as the log's deltas up to the browser's last: their concatenation is what a replay needs."""
        if self.log is None:
            return
        first = self.log.count
        pieces = self.sent_through - first + 1
        size, longer = divmod(len(seen), pieces)
        start = 0
        for number in range(pieces):
            end = start + size + (1 if number < longer else 0)
            self.log.append(first + number, seen[start:end])
            start = end

    async def completed(self, text: str, products: list[dict], metrics: dict) -> None:
        self.progress.set()
        if self._unseen is not None and self._held:  # the continuation ended inside what the browser has
            self._log_seen(self._held)
            self._unseen = None
        self.consumer.answering = False  # the customer may send the next message now
        frame = protocol.frame("completed", id=self.message_id, text=text, products=products, metrics=metrics)
        if self.log is not None:
            self.log.finish(streamlog.COMPLETED, frame)
        await self.consumer.send(frame)

    async def failed(self, code: str, message: str, retry_after: float | None = None) -> None:
        self.progress.set()
        self.consumer.answering = False
        if self.log is not None:
            self.log.finish(streamlog.FAILED, protocol.error_frame(code, message, self.message_id, retry_after))
        await self.consumer.send_error(code, message, self.message_id, retry_after)


class ChatConsumer(AsyncWebsocketConsumer):
    orchestrator: Orchestrator | None = None  # one per process, created on first use
    # The chat sends nothing through the channel layer (the stream log is in the cache). Not
    # listening on it means a Redis outage cannot close every socket of the process.
    channel_layer_alias = "unused"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Read the socket's events straight from the server and handle each before the next.

        Channels' own loop waits on its receivers through `asyncio.wait` (two more passes of the
        event loop per frame) and, before every frame, closes stale database connections through
        `sync_to_async`: a trip through asgiref's single sync thread, where each frame queued behind
        whatever else that thread had been given (onMessage to `receive`, 100 conversations: p50
        1.8 ms, p95 13.6 ms). The chat's database work runs on its own pool, which looks after its
        connections itself (chat.threads), so neither is of use here.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                handler = getattr(self, get_handler_name(message), None)
                if handler is None:
                    raise ValueError(f"No handler for message type {message['type']}")
                await handler(message)
        except StopConsumer:
            pass

    async def connect(self) -> None:
        self.conversation_id: uuid.UUID | None = None
        known_session = bool(getattr(self.scope.get("session"), "session_key", None))  # a new one has no orders
        self.session_key = await self._session_key()
        self.answer_task: asyncio.Task | None = None
        self.answer_id: str | None = None
        self.answering = False  # from the message (or resume) until its completed/error/stopped frame
        self.stopping = False  # the answer in progress is being stopped (not cut by a closed socket)
        # The socket's own answers, by message id, until the browser reports its timing for them.
        self.answered: dict[str, asyncio.Task | None] = {}
        self.background: set[asyncio.Task] = set()
        self.limiter = ConnectionLimiter(settings.CHAT_RATE_LIMIT_PER_CONNECTION, settings.CHAT_RATE_LIMIT_WINDOW_SECONDS)
        self.client_ip = (self.scope.get("client") or ("unknown", 0))[0]
        await self.accept()
        if settings.CHAT_WARM_SESSION_ON_CONNECT and known_session and not settings.NAIVE_PIPELINE:
            self._in_background(self._warm_session())
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
            self.answer_task.cancel()  # the answer stays in its log: a resume continues it

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
                await self._on_resume(protocol.check_resume(frame))
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
        wait = self.limiter.check() or await run_cache(ip_check, self.client_ip)
        if wait:
            await self.send_error("rate_limited", "Too many messages; please wait a moment.", message.id, wait)
            return
        self._begin(message.id, self._answer(message, received_at, self.answer_task))

    async def _on_resume(self, resume: protocol.ClientResume) -> None:
        if self.answering:
            raise ProtocolError("busy", "This connection is already streaming an answer.", resume.id)
        if self.conversation_id is None:
            raise ProtocolError("unknown_message", "There is no conversation to resume: reconnect with "
                                "?conversation=<uuid> of this browser's conversation.", resume.id)
        self._begin(resume.id, self._resume(resume, self.answer_task))

    def _begin(self, message_id: str, work: Coroutine[Any, Any, None]) -> None:
        self.answer_id = message_id
        self.answering = True
        self.stopping = False
        self.answer_task = asyncio.create_task(work)

    async def _answer(self, message: ClientMessage, received_at: float, previous: asyncio.Task | None) -> None:
        progress = asyncio.Event()
        keepalive = asyncio.create_task(self._keepalive(progress))
        sink = FrameSink(self, message.id, None, progress)
        try:
            if previous is not None and not previous.done():
                # The last answer is out but still being saved: its turn must be in the memory of this one.
                await asyncio.wait([previous])
            new_conversation = self.conversation_id is None
            if new_conversation:
                self.conversation_id = uuid.uuid4()  # created with the message, while the context is assembled
            conversation_id = self.conversation_id
            # The message is committed (then acknowledged) while its context is assembled: the model is
            # called, and the first delta sent, only once it is saved.
            commit = asyncio.create_task(self._commit(message, conversation_id, new_conversation))
            commit.add_done_callback(_log_lost_commit)
            if settings.NAIVE_PIPELINE:  # the benchmark's naive pipeline: one step after another
                await asyncio.wait([commit])
            recorded: services.UserTurnResult | None = None

            async def admitted() -> bool:
                nonlocal recorded
                recorded = await asyncio.shield(commit)  # a stop while waiting never cancels the commit
                if not recorded.created:
                    return False
                sink.log = StreamLogWriter.start(streamlog.message_key(conversation_id, message.id), text=message.text,
                                                 page=message.page, on_stop=lambda: self._stop_from_elsewhere(message.id))
                return True

            turn = TurnInput(conversation_id, message.id, message.text, message.page, self.session_key,
                             new_conversation=new_conversation)
            await self._orchestrator().answer(turn, sink, received_at=received_at, admitted=admitted)
            if recorded is not None and not recorded.created:
                # A message id seen before (re-sent after a reconnect) is answered once.
                if recorded.answer is not None and recorded.answer.status == TurnStatus.COMPLETE:
                    await self._send_saved_answer(message.id, recorded.answer.text, list(recorded.answer.product_skus),
                                                  recorded.answer.metrics)
                else:
                    await self._send_logged_answer(conversation_id, message.id, progress)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one broken answer must not close the socket
            logger.exception("answer %s failed", message.id)
            if sink.log is not None:
                sink.log.finish(streamlog.FAILED, protocol.error_frame("internal", INTERNAL_MESSAGE, message.id))
            await self.send_error("internal", INTERNAL_MESSAGE, message.id)
        finally:
            self._end(sink.log, message.id, keepalive)

    async def _commit(self, message: ClientMessage, conversation_id: uuid.UUID,
                      new_conversation: bool) -> services.UserTurnResult:
        """Save the customer's message (in a new conversation, for the socket's first one), then `ack` it."""
        try:
            recorded = await run_db(services.user_turn_record, conversation_id=conversation_id,
                                    client_message_id=message.id, text=message.text, page=message.page,
                                    new_conversation_session=self.session_key if new_conversation else None)
        except BaseException:
            if new_conversation and self.conversation_id == conversation_id:
                self.conversation_id = None  # never created: the next message starts it again
            raise
        await self.send(protocol.frame("ack", id=message.id, conversation=str(conversation_id)))
        self.answered[message.id] = self.answer_task
        return recorded

    async def _send_logged_answer(self, conversation_id: uuid.UUID, message_id: str, progress: asyncio.Event) -> None:
        """A message re-sent while its answer is streamed elsewhere or not saved yet: the answer as the
        log holds it. Complete: its `completed` frame alone, as a saved answer is sent (the browser
        asking again has none of its deltas to keep); else every delta, then the rest as it comes."""
        read = await streamlog.read_after(streamlog.message_key(conversation_id, message_id), -1)
        if read.state == streamlog.COMPLETED and read.final_frame is not None:
            progress.set()
            await self.send(read.final_frame)
            return
        await self._catch_up(message_id, -1, progress)

    async def _resume(self, resume: protocol.ClientResume, previous: asyncio.Task | None) -> None:
        message_id = resume.id
        progress = asyncio.Event()
        keepalive = asyncio.create_task(self._keepalive(progress))
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self._catch_up(message_id, resume.after, progress, chars=resume.chars)
        except asyncio.CancelledError:
            raise
        except streamlog.StreamLogUnavailable:
            logger.warning("resume of %s failed: the stream log is unavailable", message_id, exc_info=True)
            await self.send_error("internal", "The answer could not be resumed. Please ask again.", message_id)
        except Exception:  # noqa: BLE001
            logger.exception("resume of %s failed", message_id)
            await self.send_error("internal", INTERNAL_MESSAGE, message_id)
        finally:
            self._end(None, message_id, keepalive)

    def _end(self, log: StreamLogWriter | None, message_id: str, keepalive: asyncio.Task) -> None:
        """After an answer's task: a stopped answer's log says so; any log is written out and let go."""
        keepalive.cancel()
        # An answer that already sent `completed` ends (its turn saved) while the next one streams:
        # only the socket's current answer may mark it idle, or be marked stopped.
        current = self.answer_task is asyncio.current_task()
        if current:
            self.answering = False
        if log is not None:
            if current and self.stopping:
                log.finish(streamlog.STOPPED, protocol.frame("stopped", id=message_id))
            log.end()  # still open (the socket closed): the next resume takes it over

    async def _catch_up(self, message_id: str, after: int, progress: asyncio.Event, *, chars: int | None = None) -> None:
        """Send what the browser misses of answer `message_id` after delta `after`, then the rest as it comes.

        Following the log while another socket produces the answer; taking the answer over
        (continuing it with the model) once nobody does.
        """
        assert self.conversation_id is not None
        key = streamlog.message_key(self.conversation_id, message_id)
        loop = asyncio.get_running_loop()
        started = last_progress = loop.time()
        question: selectors.HistoryTurn | None = None
        checked_saved = False
        log: StreamLogWriter | None = None
        try:
            while True:
                read = await streamlog.read_after(key, after)
                if read.deltas:
                    after = await self._replay(message_id, read.deltas, after, progress)
                    last_progress = loop.time()
                if read.final_frame is not None:
                    progress.set()
                    await self.send(read.final_frame)
                    return
                if not read.known:
                    if not checked_saved:
                        checked_saved = True
                        question, answer = await self._saved_turns(message_id)
                        if question is None:
                            await self.send_error("unknown_message", "There is no answer with that id in this "
                                                  "conversation to resume; send the message again.", message_id)
                            return
                        if answer is not None:  # the log is gone (expired), the answer is saved
                            await self._send_saved_turn(message_id, answer)
                            return
                    if loop.time() - started < LOG_APPEAR_SECONDS:
                        await asyncio.sleep(FOLLOW_POLL_SECONDS)
                        continue
                taken = await StreamLogWriter.take_over(key, on_stop=lambda: self._stop_from_elsewhere(message_id))
                if taken is None:  # produced on another socket: follow it
                    if loop.time() - last_progress > settings.LLM_FIRST_TOKEN_DEADLINE_SECONDS + settings.LLM_STALL_SECONDS:
                        await self.send_error("interrupted", "The answer stopped coming. Please ask again.", message_id)
                        return
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
                    continue
                log, read = taken
                after = await self._replay(message_id, [(i, t) for i, t in read.deltas if i > after], after, progress)
                await self._produce(message_id, log, read, question, after, progress, chars)
                return
        except asyncio.CancelledError:
            if self.stopping and log is None:
                await streamlog.request_stop(key)  # the answer is produced elsewhere: its producer stops it
            raise
        except Exception:
            if log is not None:
                log.finish(streamlog.FAILED, protocol.error_frame("internal", INTERNAL_MESSAGE, message_id))
            raise
        finally:
            if log is not None:
                if self.stopping and self.answer_task is asyncio.current_task():
                    log.finish(streamlog.STOPPED, protocol.frame("stopped", id=message_id))
                log.end()

    async def _produce(self, message_id: str, log: StreamLogWriter, read: streamlog.LogRead,
                       question: selectors.HistoryTurn | None, sent_through: int, progress: asyncio.Event,
                       chars: int | None) -> None:
        """This socket now produces the answer: end it as logged, or continue it from the logged text
        (`chars`: how much of it the browser has, to place the seam where the browser is ahead of the log)."""
        assert self.conversation_id is not None
        if read.final_frame is not None:  # it ended while the lock changed hands
            progress.set()
            await self.send(read.final_frame)
            return
        if log.stop_requested:  # stopped on a following socket while its producer was gone
            log.finish(streamlog.STOPPED, protocol.frame("stopped", id=message_id))
            if log.text and (await self._saved_turns(message_id))[1] is None:
                await run_db(services.assistant_turn_record, conversation_id=self.conversation_id,
                             client_message_id=message_id, text=log.text, status=TurnStatus.PARTIAL,
                             failure_reason="stopped")
            progress.set()
            await self.send(protocol.frame("stopped", id=message_id))
            return
        asked = read.question
        if asked is None:  # the log never started (its producer died first): the question from the database
            if question is None:
                question = (await self._saved_turns(message_id))[0]
            if question is None:
                await self.send_error("unknown_message", "There is no answer with that id in this conversation.",
                                      message_id)
                return
            asked = {"text": question.text, "page": {}}
            log.set_question(question.text, {})
        turn = TurnInput(self.conversation_id, message_id, asked["text"], asked.get("page") or {}, self.session_key,
                         continuing=True)
        sink = FrameSink(self, message_id, log, progress, sent_through=sent_through, chars=chars)
        # Timed from here, not from the resume frame: waiting for the lock is not the model's first token.
        await self._orchestrator().answer(turn, sink, received_at=time.perf_counter(), prefill=log.text,
                                          first_index=log.count)

    async def _replay(self, message_id: str, deltas: list[tuple[int, str]], after: int, progress: asyncio.Event) -> int:
        """Logged deltas the browser does not have; the index of the last one sent."""
        for index, text in deltas:
            if index > after:
                progress.set()
                await self.send(protocol.frame("delta", id=message_id, index=index, text=text))
                after = index
        return after

    async def _saved_turns(self, message_id: str) -> tuple[selectors.HistoryTurn | None, selectors.HistoryTurn | None]:
        """The saved question and answer of `message_id` in this conversation (None where not saved)."""
        turns = await run_db(selectors.conversation_history, conversation_id=self.conversation_id,
                             session_key=self.session_key) or []
        mine = {turn.role: turn for turn in turns if turn.id == message_id}
        return mine.get("user"), mine.get("assistant")

    async def _send_saved_turn(self, message_id: str, answer: selectors.HistoryTurn) -> None:
        """An answer whose log is gone, from the database."""
        if answer.status == TurnStatus.COMPLETE:
            await self._send_saved_answer(message_id, answer.text, answer.products, {})
        else:
            await self.send_error("interrupted", "This answer was interrupted and can no longer be continued; "
                                  "what was said is saved. Please ask again.", message_id)

    async def _send_saved_answer(self, message_id: str, text: str, skus: list[str], answer_metrics: dict) -> None:
        from catalog.selectors import product_facts_by_sku

        products = await run_db(product_facts_by_sku, skus)
        await self.send(protocol.frame("completed", id=message_id, text=text, products=[p.card() for p in products],
                                       metrics=answer_metrics))

    async def _keepalive(self, progress: asyncio.Event) -> None:
        """Keep proxies from cutting the socket while the first token is slow to come."""
        while not progress.is_set():
            try:
                async with asyncio.timeout(settings.CHAT_KEEPALIVE_SECONDS):  # not wait_for: it can drop a cancel
                    await progress.wait()
            except TimeoutError:
                await self.send(protocol.frame("keepalive"))

    async def _on_stop(self, message_id: str) -> None:
        # Not answering: its final frame (completed, error) is out, though its turn may still be being saved.
        if self.answer_id != message_id or not self.answering or not self.answer_task or self.answer_task.done():
            raise ProtocolError("invalid_message", "There is no answer in progress with that id.", message_id)
        await self._stop(message_id)

    async def _stop(self, message_id: str) -> None:
        task = self.answer_task
        if task is None or task.done():
            return
        self.stopping = True
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await self.send(protocol.frame("stopped", id=message_id))

    def _stop_from_elsewhere(self, message_id: str) -> None:
        """A `stop` for this socket's answer arrived on a socket that follows it."""
        if self.answer_id == message_id and self.answering and self.answer_task is not None \
                and not self.answer_task.done():
            asyncio.get_running_loop().create_task(self._stop(message_id))

    async def _on_client_metrics(self, reported: protocol.ClientMetrics) -> None:
        if reported.id not in self.answered or self.conversation_id is None:
            return  # only the socket's own answers count, once each
        answer = self.answered.pop(reported.id)
        if reported.first_token_ms is not None:
            metrics.CLIENT_FIRST_TOKEN.observe(reported.first_token_ms / 1000)
        if reported.total_ms is not None:
            metrics.CLIENT_TOTAL.observe(reported.total_ms / 1000)
        # The report comes right after `completed`, while the answer's record may still be being saved.
        self._in_background(self._client_timing_record(answer, reported, self.conversation_id))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _warm_session(self) -> None:
        """The socket's first question is seconds away: its session's orders and cart into the cache
        meanwhile, off the turns being prepared (the background lane)."""
        from prefetch.services import session_store_data_warm

        try:
            await run_background(session_store_data_warm, session_key=self.session_key)
        except Exception:  # noqa: BLE001 - an accelerator: the first question reads them itself
            logger.warning("warming the session's store data failed", exc_info=True)

    @staticmethod
    async def _client_timing_record(answer: asyncio.Task | None, reported: protocol.ClientMetrics,
                                    conversation_id: uuid.UUID) -> None:
        if answer is not None and not answer.done():
            await asyncio.wait([answer], timeout=CLIENT_TIMING_WAIT_SECONDS)
        await run_background(services.turn_record_client_timing, conversation_id=conversation_id,
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
