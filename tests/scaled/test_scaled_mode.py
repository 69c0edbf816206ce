"""Two web processes behind no sticky routing, a Celery worker, Redis and PostgreSQL."""

from __future__ import annotations

import json
import sys
import time

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from bench.stack import ScaledStack

pytestmark = pytest.mark.scaled


async def _ask(ws, text: str, message_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    await ws.send(json.dumps({"type": "message", "id": message_id, "text": text}))
    frames = []
    while True:
        frame = json.loads(await ws.recv())
        frames.append(frame)
        if frame["type"] in ("completed", "error"):
            return frames


def _wait_for_turns(stack: ScaledStack, conversation: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(stack.env["DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
            row = conn.execute("SELECT count(*) FROM chat_turn WHERE conversation_id = %s", (conversation,)).fetchone()
        if row[0] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} turns saved")


def _sample(body: str, name: str) -> float:
    """The sum of a metric's samples over all label sets in a Prometheus text exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _ws(base: str, path: str = "/ws/chat/") -> str:
    return base.replace("http://", "ws://") + path


class ScaledModeTests:
    async def test_conversation_continues_on_another_web_process_and_worker_summarizes_it(
        self, scaled_stack: ScaledStack
    ) -> None:
        web_a = scaled_stack.start_web("web-a")
        web_b = scaled_stack.start_web("web-b")
        scaled_stack.start("worker", sys.executable, "-m", "celery", "-A", "mangaassist", "worker",
                           "--pool=solo", "--concurrency=1", "--loglevel=INFO", "-Q", "mangaassist")

        # A browser: the store page gives it a session cookie.
        page = httpx.get(web_a + "/")
        assert page.status_code == 200 and "One Piece" in page.text
        cookie = f"sessionid={page.cookies['sessionid']}"
        headers = {"Cookie": cookie}

        async with connect(_ws(web_a), origin=web_a, additional_headers=headers) as ws:
            frames = await _ask(ws, "Recommend a shonen manga like Dragon Ball", "s1")
        conversation = frames[0]["conversation"]
        assert frames[-1]["type"] == "completed", frames
        shown = frames[-1]["products"]
        assert frames[-1]["type"] == "completed" and len(shown) == 3, frames[-1]

        # The same conversation on the other process (no sticky routing): it sees the history.
        _wait_for_turns(scaled_stack, conversation, 2)  # the answer is saved right after `completed`
        async with connect(_ws(web_b, f"/ws/chat/?conversation={conversation}"), origin=web_b,
                           additional_headers=headers) as ws:
            frames = await _ask(ws, "Tell me more about the second one", "s2")
            assert frames[0] == {"type": "ack", "id": "s2", "conversation": conversation}
            assert [p["sku"] for p in frames[-1]["products"]] == [shown[1]["sku"]], frames[-1]["metrics"]
            # Grow the conversation past the verbatim window: the worker folds old turns into a summary.
            for n, text in enumerate(["Is it in stock?", "Any promotions right now?", "Recommend a seinen manga"]):
                assert (await _ask(ws, text, f"s{n + 3}"))[-1]["type"] == "completed"

        # /metrics on either process counts the turns both served (Prometheus multiprocess mode).
        for base in (web_a, web_b):
            body = httpx.get(base + "/metrics").text
            assert _sample(body, "mangaassist_llm_first_token_seconds_count") == 5, body[:2000]
            assert _sample(body, "mangaassist_prompt_tokens_count") == 5
            assert 0 < _sample(body, "mangaassist_llm_first_token_seconds_sum") < 5 * 8.0  # within the first-token deadline
            assert _sample(body, "mangaassist_context_assembly_seconds_count") == 5

        summary = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not summary:
            with psycopg.connect(scaled_stack.env["DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
                row = conn.execute("SELECT summary FROM chat_conversation WHERE id = %s", (conversation,)).fetchone()
            summary = row[0] if row else ""
            time.sleep(0.3)
        assert "Dragon Ball" in summary, scaled_stack.log("worker")[-3000:]
        assert "chat.conversation_summarize" in scaled_stack.log("worker")
        with psycopg.connect(scaled_stack.env["DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
            count = conn.execute("SELECT count(*) FROM chat_turn WHERE conversation_id = %s", (conversation,)).fetchone()[0]
        assert count == 10  # five questions, five answers: nothing lost across processes

    def test_beat_runs_with_the_database_scheduler_in_tokyo_time(self, scaled_stack: ScaledStack) -> None:
        beat = scaled_stack.start("beat", sys.executable, "-m", "celery", "-A", "mangaassist", "beat",
                                  "--loglevel=DEBUG", "--pidfile=", "-s", str(scaled_stack.logs / "beat-schedule"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "DatabaseScheduler" not in scaled_stack.log("beat"):
            time.sleep(0.3)
        assert beat.poll() is None, scaled_stack.log("beat")
        log = scaled_stack.log("beat")
        assert "django_celery_beat.schedulers.DatabaseScheduler" in log
        names: list[str] = []
        while time.monotonic() < deadline and "celery.backend_cleanup" not in names:
            with psycopg.connect(scaled_stack.env["DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
                names = [r[0] for r in conn.execute("SELECT name FROM django_celery_beat_periodictask").fetchall()]
            time.sleep(0.2)
        assert "celery.backend_cleanup" in names  # beat keeps its schedule in PostgreSQL
        result = scaled_stack.manage("shell", "-c", "from mangaassist.celery import app; print(app.conf.timezone)")
        assert result.stdout.strip().splitlines()[-1] == "Asia/Tokyo"
