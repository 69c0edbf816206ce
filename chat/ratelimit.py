"""Flood limits for the chat socket: per connection (in memory) and per client IP (shared cache)."""

from __future__ import annotations

import time
from collections import deque

from django.conf import settings
from django.core.cache import cache


class ConnectionLimiter:
    """Sliding window of message times for one socket."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.times: deque[float] = deque()

    def check(self, now: float | None = None) -> float | None:
        """None when allowed (and counted), else seconds until the next message is allowed."""
        now = time.monotonic() if now is None else now
        while self.times and now - self.times[0] >= self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return self.window - (now - self.times[0])
        self.times.append(now)
        return None


def ip_check(ip: str) -> float | None:
    """Fixed-window count per IP, shared by every web process through the cache."""
    window = settings.CHAT_RATE_LIMIT_WINDOW_SECONDS
    now = time.time()
    bucket = int(now // window)
    key = f"ratelimit:ip:{ip}:{bucket}"
    try:
        cache.add(key, 0, timeout=window + 1)
        count = cache.incr(key)
    except Exception:  # noqa: BLE001 - cache down: the per-connection limit still holds
        return None
    if count > settings.CHAT_RATE_LIMIT_PER_IP:
        return (bucket + 1) * window - now
    return None
