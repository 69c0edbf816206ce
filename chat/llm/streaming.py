"""Bridging a blocking SDK stream (botocore, llama.cpp) onto the event loop.

The blocking iterator runs on a dedicated thread pool; each item is handed to
the loop the moment the SDK yields it (no batching). Closing the async side sets
a flag and calls `abort` so a thread blocked in a socket read wakes up at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterator, TypeVar

T = TypeVar("T")

# One thread per concurrent stream: botocore reads block. Sized for hundreds of conversations.
STREAM_EXECUTOR = ThreadPoolExecutor(max_workers=int(os.environ.get("LLM_STREAM_THREADS", "256")),
                                     thread_name_prefix="mangaassist-llm")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def iterate_in_thread(open_stream: Callable[[], Iterator[T]], *,
                            abort: Callable[[], None] | None = None) -> AsyncIterator[T]:
    """Yield what `open_stream()`'s iterator yields, read on a worker thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancelled.set()

    def pump() -> None:
        try:
            for item in open_stream():
                if cancelled.is_set():
                    break
                put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the async side, raised there
            if not cancelled.is_set():
                put(_Failure(exc))
        finally:
            put(_DONE)

    future = loop.run_in_executor(STREAM_EXECUTOR, pump)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        if not future.done():
            cancelled.set()
            if abort is not None:
                abort()
