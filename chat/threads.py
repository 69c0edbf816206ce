"""Running blocking work (ORM, botocore, llama.cpp) off the event loop.

One shared pool sized for the ORM: `thread_sensitive=False` so a hundred
conversations do not queue behind one thread, and Django's connection
housekeeping around each call as Channels does.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")

DB_EXECUTOR = ThreadPoolExecutor(
    max_workers=int(os.environ.get("CHAT_DB_THREADS", "16")), thread_name_prefix="mangaassist-db"
)


def _with_connection_housekeeping(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


async def run_db(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking ORM call on the shared pool and await its result."""
    call = partial(_with_connection_housekeeping, func, *args, **kwargs)
    return await sync_to_async(call, thread_sensitive=False, executor=DB_EXECUTOR)()
