"""Running blocking work (ORM, botocore, llama.cpp) off the event loop, the customer's wait first.

Three lanes:
- `run_db` / `submit_db`: the customer's path (context sources, the message's commit). One shared
  pool sized for the ORM: `thread_sensitive=False` so a hundred conversations do not queue behind
  one thread, and Django's connection housekeeping around each call as Channels does.
- `run_assembly`: a turn's context assembly where its sources are network round trips (scaled
  mode), one hop off the event loop. It fans its sources out to the ORM pool and waits for them
  there (never on a pool thread of its own: a full pool would wait for itself), so the loop, busy
  relaying other answers, is not in between its stages. In embedded mode the assembly runs on the
  loop, and awaits what it sends to the pool with `pool_call_ended`.
- `run_background`: what follows an answer the customer already has (the next turn's memory,
  prefetch bookkeeping, client timings, in-process tasks). A small pool of its own, and each job
  waits (a bounded time) while any turn of this process is between its message and its model
  call: those milliseconds are the first-token wait, and every thread running beside them takes
  the GIL from them. The answer itself is saved on the same pool at once (`run_background_now`):
  a browser that reconnects, or reloads the transcript, must find it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")

DB_EXECUTOR = ThreadPoolExecutor(
    max_workers=int(os.environ.get("CHAT_DB_THREADS", "16")), thread_name_prefix="mangaassist-db"
)
ASSEMBLY_EXECUTOR = ThreadPoolExecutor(
    max_workers=int(os.environ.get("CHAT_DB_THREADS", "16")), thread_name_prefix="mangaassist-assembly"
)
BACKGROUND_EXECUTOR = ThreadPoolExecutor(
    max_workers=int(os.environ.get("CHAT_BACKGROUND_THREADS", "4")), thread_name_prefix="mangaassist-background"
)


class ForegroundGate:
    """How many turns of this process are between their message and their model call.

    Background jobs start only when none is (or after `max_wait`, so a busy process still saves
    its answers): a job already running is not interrupted, but no new one joins the queue for
    the GIL while a customer's context is being assembled.
    """

    def __init__(self) -> None:
        self._count = 0
        self._quiet = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    @contextmanager
    def foreground(self) -> Iterator[None]:
        with self._quiet:
            self._count += 1
        try:
            yield
        finally:
            with self._quiet:
                self._count -= 1
                if not self._count:
                    self._quiet.notify_all()
                    waiters, self._waiters = self._waiters, []
                    for loop, future in waiters:
                        loop.call_soon_threadsafe(_set_done, future)

    @property
    def busy(self) -> int:
        return self._count

    def wait_quiet(self, max_wait: float) -> None:
        """On a thread: block until no turn is being prepared, or `max_wait` seconds."""
        if not self._count or max_wait <= 0:
            return
        with self._quiet:
            self._quiet.wait_for(lambda: not self._count, timeout=max_wait)

    async def until_quiet(self, max_wait: float) -> None:
        """On an event loop: the same, holding no thread while it waits."""
        if not self._count or max_wait <= 0:
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._quiet:
            if not self._count:
                return
            self._waiters.append((loop, future))
        await asyncio.wait([future], timeout=max_wait)


def _set_done(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future, _: Future) -> None:
    """On the pool's thread, when its call ends: wakes the loop that waits (if any still does)."""
    try:
        loop.call_soon_threadsafe(_set_done, waiter)
    except RuntimeError:  # a call that outlived its deadline, and the loop: nobody waits for it
        pass


async def pool_call_ended(future: Future, timeout: float) -> bool:
    """On the event loop: whether a call started with `submit_db` ended within `timeout` seconds (the
    loop, and every thread, free meanwhile; the call is neither awaited further nor cancelled)."""
    if not future.done():
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        future.add_done_callback(partial(_wake, loop, waiter))
        await asyncio.wait([waiter], timeout=max(0.0, timeout))
    return future.done()


gate = ForegroundGate()


class WriteQueue:
    """SQLite takes one writer at a time, and a writer that finds it taken sleeps in SQLite's busy
    handler, 10 to 100 ms between tries after the first few. This process's chat writes queue here
    instead: each is woken the moment the one before it is done, and a customer's message (`urgent`)
    goes before the writes that follow answers. A no-op on PostgreSQL (row locks, no such handler).
    """

    def __init__(self) -> None:
        self._free = threading.Condition()
        self._owner: int | None = None
        self._urgent = 0

    @contextmanager
    def turn(self, *, urgent: bool = False) -> Iterator[None]:
        from django.db import connection

        me = threading.get_ident()
        if connection.vendor != "sqlite" or self._owner == me:
            yield
            return
        with self._free:
            self._urgent += urgent
            try:
                self._free.wait_for(lambda: self._owner is None and (urgent or not self._urgent))
            finally:
                self._urgent -= urgent
            self._owner = me
        try:
            yield
        finally:
            with self._free:
                self._owner = None
                self._free.notify_all()


writes = WriteQueue()


def background_defer_seconds() -> float:
    from django.conf import settings

    return settings.CHAT_BACKGROUND_MAX_DEFER_MS / 1000


def _with_connection_housekeeping(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


async def run_db(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking ORM call of the customer's path on the shared pool and await its result."""
    call = partial(_with_connection_housekeeping, func, *args, **kwargs)
    return await sync_to_async(call, thread_sensitive=False, executor=DB_EXECUTOR)()


def cache_is_local() -> bool:
    """Embedded mode's local-memory cache: microseconds, and atomic on the event loop."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    return isinstance(caches["default"], LocMemCache)


async def run_cache(func: Callable[..., T], *args: Any) -> T:
    """A cache call of the customer's path: in place on local memory (no thread to wait for), on the
    customer's pool when the cache is across the network."""
    if cache_is_local():
        return func(*args)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(DB_EXECUTOR, partial(func, *args))


def submit_db(func: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Start a blocking call of the customer's path on the ORM pool (from a thread: `run_assembly`)."""
    return DB_EXECUTOR.submit(_with_connection_housekeeping, func, *args, **kwargs)


async def run_assembly(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a turn's assembly (which waits for `submit_db` calls) on its own pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(ASSEMBLY_EXECUTOR, partial(_with_connection_housekeeping, func, *args, **kwargs))


async def run_background(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work that follows an answer on the background lane, once no turn is being prepared
    (waiting for that on the loop: a pool thread is never held by a job that may not start yet)."""
    await gate.until_quiet(background_defer_seconds())
    return await run_background_now(func, *args, **kwargs)


async def run_background_now(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run it on the background lane at once: for what must be saved as soon as the customer has it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(BACKGROUND_EXECUTOR, partial(_with_connection_housekeeping, func, *args, **kwargs))
