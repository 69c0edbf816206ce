"""The stream log: every delta of an answer, readable by any web process (DESIGN.md §4 `resume`).

A browser that lost its socket (a dropped connection, a page reload, a web process
killed with SIGKILL) reconnects to any web process and sends `resume`. That process
replays from this log the deltas the browser missed and, if the answer did not end,
continues it with the model (the logged text as an assistant prefill). Storage is the
Django cache: Redis in scaled mode, local memory embedded. The log is a relay with a
short life; the database keeps the answer.

Layout, per answer (`message_key`: conversation id + client message id):
    <key>:head     {"n": deltas logged, "state": open|completed|stopped|failed, "final": "<final frame>" or None}
    <key>:c:<n>    [text, ...]: deltas CHUNK * n .. CHUNK * (n + 1) - 1
    <key>:meta     {"text": the question, "page": its page context}: what a continuation is asked
    <key>:lock     the token of the one producer writing the log (a few seconds' TTL, refreshed)
    <key>:stop     a `stop` sent on a socket that only follows the answer

One producer per answer holds the lock: the socket answering the message, or later the
socket that resumed it. Its writer task batches deltas off the send path (`append`
only queues, so a frame never waits on Redis) and writes each batch's chunks with the
head in one call (MSET: a reader that sees a head finds every delta it counts). A
producer that ends without a final state (its socket closed: the answer was
cancelled) releases the lock, and the next `resume` takes it over. A producer killed
with SIGKILL releases nothing: its lock expires after LOCK_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from django.core.cache import cache

from .threads import cache_is_local

logger = logging.getLogger(__name__)

CHUNK = 32  # deltas per cache key: a batch rewrites at most the open chunk, never the whole answer
TTL_SECONDS = 600  # how long an answer can be resumed after its last delta
LOCK_TTL_SECONDS = 4  # a producer that stopped refreshing its lock this long ago is dead
LOCK_REFRESH_SECONDS = 1.0
STOP_CHECK_SECONDS = 0.25  # how soon a `stop` sent on another socket reaches the producer
WRITE_RETRIES = 5  # a final write given up after this many cache failures in a row
# The log gets at most one write per answer this often (the deltas meanwhile go in one batch): a bounded
# load on Redis, and on the event loop, at a hundred answers at once, for a log that trails the socket
# by as much. A browser resuming from it asks for what it lacks after its own last delta.
FLUSH_SECONDS = 0.05

OPEN, COMPLETED, STOPPED, FAILED = "open", "completed", "stopped", "failed"


class StreamLogUnavailable(Exception):
    """The cache could not be read (or the log is damaged)."""


def message_key(conversation_id: uuid.UUID | str, message_id: str) -> str:
    return f"streamlog:{conversation_id}:{message_id}"


def _head(key: str) -> str:
    return f"{key}:head"


def _meta(key: str) -> str:
    return f"{key}:meta"


def _chunk(key: str, number: int) -> str:
    return f"{key}:c:{number}"


def _lock(key: str) -> str:
    return f"{key}:lock"


def _stop(key: str) -> str:
    return f"{key}:stop"


# A networked cache's round trips, on threads of their own: not the default executor, where a
# customer's rate-limit check would queue behind every stream's log writes.
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mangaassist-streamlog")


async def _io(func: Callable[..., Any], *args: Any) -> Any:
    """Local memory is called in place (microseconds, and atomic on the event loop); a networked cache on a thread."""
    if cache_is_local():
        return func(*args)
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, partial(func, *args))


# --- reading (any process) -------------------------------------------------------------------

@dataclass(frozen=True)
class LogRead:
    known: bool  # the log exists
    count: int = 0  # deltas logged
    deltas: list[tuple[int, str]] = field(default_factory=list)  # those after `after`, in order, no gaps
    state: str = OPEN
    final_frame: str | None = None  # the frame that ended the answer (completed, stopped, error)
    question: dict | None = None  # {"text", "page"} (only read when asked for)


def _read_after(key: str, after: int, with_question: bool) -> LogRead:
    names = [_head(key), _meta(key)] if with_question else [_head(key)]
    found = cache.get_many(names)
    head = found.get(_head(key))
    if head is None:
        return LogRead(False, question=found.get(_meta(key)))
    count = head["n"]
    deltas: list[tuple[int, str]] = []
    if after + 1 < count:
        numbers = range((after + 1) // CHUNK, (count - 1) // CHUNK + 1)
        chunks = cache.get_many([_chunk(key, n) for n in numbers])
        for number in numbers:
            texts = chunks.get(_chunk(key, number))
            if texts is None:
                raise StreamLogUnavailable(f"{key}: chunk {number} is missing")
            deltas.extend((number * CHUNK + offset, text) for offset, text in enumerate(texts)
                          if after < number * CHUNK + offset < count)
        if len(deltas) != count - after - 1:
            raise StreamLogUnavailable(f"{key}: chunks hold fewer deltas than the head counts")
    return LogRead(True, count, deltas, head["state"], head.get("final"), found.get(_meta(key)))


async def read_after(key: str, after: int, *, with_question: bool = False) -> LogRead:
    """What the log holds after delta `after` (-1: everything), and how the answer ended, if it did."""
    try:
        return await _io(_read_after, key, after, with_question)
    except StreamLogUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a cache timeout or connection error
        raise StreamLogUnavailable(str(exc)) from exc


async def request_stop(key: str) -> None:
    """A `stop` on a socket that follows an answer produced elsewhere: its producer stops it."""
    try:
        await _io(cache.set, _stop(key), 1, 60)
    except Exception:  # noqa: BLE001
        logger.warning("stream log %s: could not record the stop", key, exc_info=True)


# --- writing (the producer) -----------------------------------------------------------------

class StreamLogWriter:
    """The one producer of an answer's log: holds its lock, writes its deltas, watches for a remote stop.

    `append`, `finish` and `end` never block and never raise: the log helps a resume, it
    never slows or breaks the answer. Everything queued is written, in order, before the
    lock is released.
    """

    def __init__(self, key: str, *, token: str, texts: list[str], question: dict | None,
                 on_stop: Callable[[], object] | None) -> None:
        self.key = key
        self.token = token
        self.texts = texts  # every delta of the answer, logged or queued
        self.on_stop = on_stop
        self.stop_requested = False
        self.state = OPEN
        self.final_frame: str | None = None
        self._question = question  # written with the first batch (a new answer only)
        self._lock_new = question is not None  # a new answer sets its lock; a take-over acquired it already
        self._written = (len(texts), OPEN) if question is None else (-1, OPEN)  # what the head in the cache says
        self._flushed = len(texts)  # deltas in the cache
        self._ending = False
        self._wake = asyncio.Event()  # anything new to write
        self._final = asyncio.Event()  # the answer ended or its producer is done: write now, not at the pace
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"streamlog {key}")

    # --- opening ---

    @classmethod
    def start(cls, key: str, *, text: str, page: dict, on_stop: Callable[[], object] | None = None) -> "StreamLogWriter":
        """The log of a new answer (its question was just saved, so nobody else produces it)."""
        return cls(key, token=uuid.uuid4().hex, texts=[], question={"text": text, "page": page}, on_stop=on_stop)

    @classmethod
    async def take_over(cls, key: str, *, on_stop: Callable[[], object] | None = None
                        ) -> tuple["StreamLogWriter", LogRead] | None:
        """Become the producer of an answer nobody produces now (None while another holds the lock).

        Returns the writer and the whole log as it stands (read after the lock was taken:
        the previous producer wrote everything before it let go).
        """
        token = uuid.uuid4().hex
        try:
            if not await _io(cache.add, _lock(key), token, LOCK_TTL_SECONDS):
                return None
            stop = await _io(cache.get, _stop(key))
        except Exception as exc:  # noqa: BLE001
            raise StreamLogUnavailable(str(exc)) from exc
        read = await read_after(key, -1, with_question=True)
        writer = cls(key, token=token, texts=[text for _, text in read.deltas], question=None, on_stop=on_stop)
        writer.stop_requested = bool(stop)
        if read.known:
            writer.state, writer.final_frame = read.state, read.final_frame
            writer._written = (read.count, read.state)
        else:
            writer._written = (-1, OPEN)  # the head is written with the first batch
        return writer, read

    def set_question(self, text: str, page: dict) -> None:
        """A log taken over before its first write (the question read from the database instead)."""
        self._question = {"text": text, "page": page}
        self._written = (-1, self.state)
        self._wake.set()

    # --- the producer's calls (on the event loop, never blocking) ---

    @property
    def count(self) -> int:
        return len(self.texts)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def append(self, index: int, text: str) -> None:
        """Queue delta `index` (the next one: no gaps)."""
        if index != len(self.texts) or self.state != OPEN:
            logger.warning("stream log %s: delta %s out of order (expected %s)", self.key, index, len(self.texts))
            return
        self.texts.append(text)
        self._wake.set()

    def finish(self, state: str, final_frame: str) -> None:
        """The answer ended (completed, stopped or failed): a resume replays it and sends `final_frame`."""
        if self.state == OPEN:
            self.state, self.final_frame = state, final_frame
        self._wake.set()
        self._final.set()

    def end(self) -> None:
        """The producer is done: write what is queued, then release the lock (an open log can be taken over)."""
        self._ending = True
        self._wake.set()
        self._final.set()

    async def ended(self) -> None:
        await asyncio.shield(self.task)

    # --- the writer task ---

    async def _run(self) -> None:
        """Write what is queued at most once per FLUSH_SECONDS (the end at once), check for a remote
        stop every STOP_CHECK_SECONDS, until the producer is done and everything is written."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + STOP_CHECK_SECONDS
        next_refresh = loop.time() + LOCK_REFRESH_SECONDS
        flushed_at = float("-inf")
        failures = 0
        try:
            while True:
                self._wake.clear()
                dirty = self._written != (len(self.texts), self.state)
                now = loop.time()
                if dirty and (self._final.is_set() or now >= flushed_at + FLUSH_SECONDS):
                    if await self._flush():
                        failures = 0
                        flushed_at = loop.time()
                        continue
                    failures += 1
                    if self._ending and failures >= WRITE_RETRIES:
                        logger.error("stream log %s: gave up writing after %s failures", self.key, failures)
                        return
                    await asyncio.sleep(min(0.05 * 2 ** failures, 1.0))
                    continue
                if self._ending and not dirty:
                    return
                if now >= next_check:
                    next_check = now + STOP_CHECK_SECONDS
                    refresh = now >= next_refresh
                    if refresh:
                        next_refresh = now + LOCK_REFRESH_SECONDS
                    await self._check(refresh)
                    continue
                # Queued deltas wait for their turn (or the end); with nothing queued, wait for the next delta.
                event, until = (self._final, min(next_check, flushed_at + FLUSH_SECONDS)) if dirty \
                    else (self._wake, next_check)
                try:
                    async with asyncio.timeout(max(0.0, until - loop.time())):
                        await event.wait()
                except TimeoutError:
                    pass
        finally:
            await self._release()

    async def _flush(self) -> bool:
        """Write the queued deltas (the chunks they fall in) and the head, in one call."""
        count, state, final = len(self.texts), self.state, self.final_frame
        values: dict[str, Any] = {}
        for number in range(self._flushed // CHUNK, (count - 1) // CHUNK + 1 if count else 0):
            values[_chunk(self.key, number)] = self.texts[number * CHUNK:min(count, (number + 1) * CHUNK)]
        values[_head(self.key)] = {"n": count, "state": state, "final": final}
        if self._question is not None:
            values[_meta(self.key)] = self._question
        lock_new = self._lock_new
        token = self.token

        def write() -> None:
            cache.set_many(values, timeout=TTL_SECONDS)
            if lock_new:
                cache.set(_lock(self.key), token, timeout=LOCK_TTL_SECONDS)

        try:
            await _io(write)
        except Exception:  # noqa: BLE001 - the log helps a resume; it never breaks an answer
            logger.warning("stream log %s: cache write failed", self.key, exc_info=True)
            return False
        self._flushed, self._written = count, (count, state)
        self._question = None
        self._lock_new = False
        return True

    async def _check(self, refresh: bool) -> None:
        """Is there a `stop` from another socket? Keep the lock alive (if it is still ours)."""
        def check() -> tuple[bool, bool]:
            found = cache.get_many([_lock(self.key), _stop(self.key)])
            ours = found.get(_lock(self.key)) == self.token
            if ours and refresh:
                cache.set(_lock(self.key), self.token, timeout=LOCK_TTL_SECONDS)
            return ours, bool(found.get(_stop(self.key)))

        try:
            ours, stop = await _io(check)
        except Exception:  # noqa: BLE001
            logger.warning("stream log %s: lock check failed", self.key, exc_info=True)
            return
        if not ours and not self._lock_new:
            logger.warning("stream log %s: the lock was lost (event loop stalled longer than %s s?)",
                           self.key, LOCK_TTL_SECONDS)
        if stop and not self.stop_requested:
            self.stop_requested = True
            if self.on_stop is not None:
                self.on_stop()

    async def _release(self) -> None:
        def release() -> None:
            if cache.get(_lock(self.key)) == self.token:
                cache.delete(_lock(self.key))

        try:
            await _io(release)
        except Exception:  # noqa: BLE001 - it expires by itself
            logger.warning("stream log %s: could not release the lock", self.key, exc_info=True)
