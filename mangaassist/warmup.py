"""Process warm-up: pay the one-off costs before the first customer does.

The tokenizer file (about 0.1 s) and the catalog index (tens of ms for the demo
catalog, seconds for the MADB import) load on a background thread at start.
"""

from __future__ import annotations

import gc
import logging
import threading

logger = logging.getLogger(__name__)
# Cleared while a warm-up runs: /healthz reports "warming" (not ready) until it is over.
READY = threading.Event()
READY.set()


def warm_up(*, pool_connections: bool = True, freeze: bool = False, store_cache: bool = True) -> None:
    """Load everything a first answer would otherwise pay for.

    `pool_connections=False` in a Celery worker's main process, which forks its pool right after:
    the children inherit the loaded index and models, never an open connection. `freeze`: a
    server process's start (see freeze_long_lived), before it reports ready. `store_cache`: a web
    process also caches the store data first turns read (chat.assembly.store_cache_warm).
    """
    from django.db import close_old_connections

    from catalog.retrieval import get_index
    from chat.compression import count_tokens
    from chat.intents import classify
    from chat.llm import get_backend

    try:
        count_tokens("warm up")
        classify("warm up")  # trains the intent model (about a second)
        warm = getattr(get_backend(), "warm", None)
        if warm is not None:
            warm()  # e.g. the boto3 client (~80 ms) or the llama.cpp model, before the first customer
        get_index()
        if pool_connections:
            _open_pool_connections()
        from django.conf import settings

        if pool_connections and store_cache and not settings.NAIVE_PIPELINE:  # naive: no prefetch of any kind
            from chat.assembly import store_cache_warm

            warmed = store_cache_warm(products=settings.CHAT_WARM_PRODUCTS)
            logger.info("warm-up: facts of %s products, promotions and FAQ cached", warmed)
    except Exception:  # noqa: BLE001 - e.g. not migrated yet: the first request builds it instead
        logger.warning("warm-up skipped", exc_info=True)
    finally:
        close_old_connections()
        if not pool_connections:
            from django.db import connections

            connections.close_all()
        if freeze:
            freeze_long_lived()
        READY.set()


def _open_pool_connections(count: int = 4) -> None:
    """Open database connections on a few ORM pool threads, so early turns skip the connect."""
    from concurrent.futures import wait

    from django.db import connection

    from chat.threads import DB_EXECUTOR

    def ping() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    wait([DB_EXECUTOR.submit(ping) for _ in range(count)], timeout=10)


def freeze_long_lived() -> None:
    """Leave what the warm-up loaded (index, tokenizer, intent model, Django) out of the cyclic GC.

    A full collection walks every object in the process: with the catalog index loaded that
    froze the event loop for up to 134 ms under load (gen2, measured with gc.callbacks), stopping
    every stream and first token at once. Frozen objects are still freed by reference counting.
    Also what a forking Celery worker wants before it forks (copy-on-write pages stay shared).
    """
    gc.collect()
    gc.freeze()


def warm_up_in_background() -> threading.Thread:
    READY.clear()
    thread = threading.Thread(target=warm_up, kwargs={"freeze": True}, name="mangaassist-warmup", daemon=True)
    thread.start()
    return thread
