"""How often an answer's deltas go out as frames.

Each frame costs the event loop a write, two poller changes and the Channels/daphne/autobahn
path; a token costs it far less. So after the first delta (always at once), what arrives within
a window goes out as one frame. The window is CHAT_DELTA_COALESCE_MS while the loop keeps up,
and grows with the loop's lateness (up to CHAT_DELTA_COALESCE_MAX_MS) when it falls behind:
fewer, larger frames, so the loop is free for the next customer's first token.
"""

from __future__ import annotations

from django.conf import settings

LAG_SMOOTHING = 0.05  # weight of each new lateness sample (a moving average over ~20 frames)
LAG_FACTOR = 5.0  # each ms the loop runs late adds this many ms to the window


class FramePacer:
    """One per process: the loop's lateness, as the relays' own timed waits see it."""

    def __init__(self) -> None:
        self.lag = 0.0  # seconds, smoothed

    def window(self) -> float:
        """Seconds between two frames of one answer (0: a frame per delta)."""
        base = settings.CHAT_DELTA_COALESCE_MS / 1000
        if not base:
            return 0.0
        return min(max(base, settings.CHAT_DELTA_COALESCE_MAX_MS / 1000), base + LAG_FACTOR * self.lag)

    def observe(self, late: float) -> None:
        """A timed wait ended `late` seconds after it was due."""
        self.lag += LAG_SMOOTHING * (max(0.0, late) - self.lag)


pacer = FramePacer()
