"""Shared set-up for the offline benchmarks: a throwaway embedded store and conversation replay."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = ROOT / "bench" / "data" / "conversations.json"
RESULTS = ROOT / "bench" / "results"


def django_setup(**env: str) -> None:
    """Embedded mode on a fresh temporary SQLite database with the demo catalog."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mangaassist.settings")
    os.environ["SQLITE_PATH"] = str(Path(tempfile.mkdtemp(prefix="mangaassist-bench-")) / "bench.sqlite3")
    os.environ["MANGAASSIST_WARMUP"] = "false"
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from catalog.services import demo_catalog_load

    demo_catalog_load()


def load_conversations(path: Path = CONVERSATIONS) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class CapturedAnswer:
    text: str = ""
    products: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    first_delta_at: float | None = None


class CaptureSink:
    """A TurnSink that keeps what the customer would have received."""

    def __init__(self) -> None:
        self.answer = CapturedAnswer()

    async def delta(self, index: int, text: str) -> None:
        import time

        if self.answer.first_delta_at is None:
            self.answer.first_delta_at = time.perf_counter()

    async def completed(self, text: str, products: list[dict], metrics: dict) -> None:
        self.answer.text, self.answer.products, self.answer.metrics = text, products, metrics

    async def failed(self, code: str, message: str, retry_after: float | None = None) -> None:
        self.answer.error = code


def new_session() -> str:
    return f"bench:{uuid.uuid4()}"
