"""The prefetch app's beat entry, for the lead to merge into throughput/schedule.py (which owns
every beat entry of the project).

Same fields as throughput.schedule.BeatEntry, so merging is
`[BeatEntry(**entry) for entry in PREFETCH_BEAT_ENTRIES]` appended to `beat_entries()`.
The crontab is read in Asia/Tokyo (throughput.schedule.SCHEDULE_TIMEZONE). The task accepts
the `actor` keyword that schedule_install passes to every entry.
"""

from __future__ import annotations

RELEARN = "prefetch: relearn transitions"

PREFETCH_BEAT_ENTRIES: list[dict[str, str | int]] = [
    # 04:00 JST daily: the quietest hour, after the day's traffic is recorded. Proposes (or, with
    # PrefetchSettings.auto_apply_relearned, applies) probabilities learned from the last 28 days.
    {
        "name": RELEARN,
        "task": "prefetch.transitions_relearn",
        "minute": "0",
        "hour": "4",
        "expire_seconds": 60 * 60,
        "description": "Relearn prefetch transition probabilities from observed follow-ups (previous intent -> "
                       "intent); proposals wait in the admin unless auto-apply is on.",
    },
]
