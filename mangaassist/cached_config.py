"""Configuration PMs edit in the admin (and pages built from the catalog), read through the
shared cache by every process.

One cache read per turn; the database only after a change (the app's signals call
`cached_config_invalidate` once the edit commits). The cache is an accelerator: down, the
database answers.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from django.core.cache import cache

logger = logging.getLogger(__name__)
T = TypeVar("T")


def cached_config(key: str, load: Callable[[], T], kind: type[T], *, timeout: int | None) -> T:
    """The cached copy at `key` when it is a `kind`, else `load()` (stored for the next reader)."""
    try:
        config = cache.get(key)
    except Exception:  # noqa: BLE001 - cache down: read the database
        config = None
    if not isinstance(config, kind):
        config = load()
        try:
            cache.set(key, config, timeout=timeout)
        except Exception:  # noqa: BLE001
            pass
    return config


def cached_config_invalidate(key: str) -> None:
    try:
        cache.delete(key)
    except Exception:  # noqa: BLE001 - the TTL (where there is one) catches up
        logger.warning("could not invalidate the cached configuration %s", key, exc_info=True)
