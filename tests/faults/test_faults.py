"""Faults in a real scaled stack: what the customer sees, and that no turn is lost (issue 11).

Each test replays a short conversation over the WebSocket (as the widget does: a session
cookie from the store page, the store's Origin), injects one fault into a real component
(a private Redis, a private PostgreSQL, a web process, the Celery broker), then checks the
frames the customer got AND the turns in PostgreSQL: every acked message has exactly one
user turn, and once the dust settles exactly one assistant turn (complete, partial with a
reason, or failed). Model faults (429, mid-stream errors, stalls, cuts, stop, a closed
socket) are covered by tests/chat/test_llm_bedrock.py and tests/chat/test_orchestrator.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.stack import PrivateRedis

from .conftest import WORKER, FaultStack

pytestmark = pytest.mark.scaled

FRAME_TIMEOUT = 20.0  # no frame for this long is a hang: a failure, never a wait
RECOMMEND = "Recommend a shonen manga like Dragon Ball"
FOLLOW_UP = "Tell me more about the first one"  # recommendation -> product_question: details and reviews prefetched
PREFETCH_DONE = "Task prefetch.prefetch_for_turn["  # the worker's INFO line for a finished prefetch ("... succeeded")
# Bedrock-like pace, slowed down so an answer streams for seconds: a kill lands mid-answer.
SLOW_MODEL = {"LLM_SIMULATED_PROFILE": "bedrock", "LLM_SIM_PREFILL_BASE_MS": "50", "LLM_SIM_PREFILL_PER_TOKEN_MS": "0",
              "LLM_SIM_DECODE_MS_PER_TOKEN": "40", "LLM_SIM_JITTER": "0"}
ACTIVE_THROUGHPUT = ("requested", "creating", "in_service", "draining")


@dataclass
class Browser:
    """A customer's browser: the store page's session cookie, the conversation, and every message acked."""

    cookie: str
    conversation: str | None = None
    acked: list[tuple[str, str]] = field(default_factory=list)  # (conversation, message id) acked, once each

    @classmethod
    def open_store(cls, base: str) -> "Browser":
        page = httpx.get(base + "/", timeout=15)
        assert page.status_code == 200, page.text[:500]
        return cls(cookie=f"sessionid={page.cookies['sessionid']}")

    def socket(self, base: str, *, resume: bool = True) -> Any:
        query = f"?conversation={self.conversation}" if resume and self.conversation else ""
        return connect(base.replace("http://", "ws://") + "/ws/chat/" + query, origin=base,
                       additional_headers={"Cookie": self.cookie}, open_timeout=FRAME_TIMEOUT)

    async def frames(self, ws: ClientConnection, until: tuple[str, ...] = ("completed", "error", "stopped"),
                     *, deltas: int | None = None) -> list[dict]:
        """Frames up to one of `until` (or `deltas` deltas); a closed socket ends them with a `closed` pseudo-frame."""
        frames: list[dict] = []
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
            except ConnectionClosed as closed:
                frames.append({"type": "closed", "code": closed.rcvd.code if closed.rcvd else None})
                return frames
            except TimeoutError:
                raise AssertionError(f"no frame for {FRAME_TIMEOUT} s (a hang); got so far: {frames}") from None
            frames.append(frame)
            if frame["type"] == "ack":
                self.conversation = frame["conversation"]
                if (frame["conversation"], frame["id"]) not in self.acked:  # a re-sent message is acked again
                    self.acked.append((frame["conversation"], frame["id"]))
            if frame["type"] in until or (deltas is not None and _count(frames, "delta") >= deltas):
                return frames

    async def ask(self, ws: ClientConnection, text: str, message_id: str, **wait: Any) -> list[dict]:
        await ws.send(json.dumps({"type": "message", "id": message_id, "text": text}))
        return await self.frames(ws, **wait)


def _count(frames: list[dict], kind: str) -> int:
    return sum(1 for f in frames if f["type"] == kind)


def _last(frames: list[dict]) -> dict:
    return frames[-1]


def _delta_text(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


def _wait_until(condition: Callable[[], Any], what: Callable[[], Any] | str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def turns(faults: FaultStack, conversations: set[str]) -> list[tuple[str, str, str, str, str]]:
    """(conversation, message id, role, status, failure reason) of every saved turn of `conversations`."""
    with faults.db() as conn:
        rows = conn.execute("SELECT conversation_id::text, client_message_id, role, status, failure_reason "
                            "FROM chat_turn WHERE conversation_id::text = ANY(%s) ORDER BY id",
                            (list(conversations),)).fetchall()
    return [tuple(row) for row in rows]


def assert_no_turn_lost(faults: FaultStack, browser: Browser, timeout: float = 20) -> list[tuple]:
    """Every acked message: one user turn; once the dust settles, one assistant turn that says how it ended."""
    acked = sorted(browser.acked)
    conversations = {c for c, _ in acked}

    def settled() -> list[tuple] | None:
        saved = turns(faults, conversations)
        users = sorted((c, m) for c, m, role, _, _ in saved if role == "user")
        answers = sorted((c, m) for c, m, role, _, _ in saved if role == "assistant")
        return saved if users == acked and answers == users else None

    saved = _wait_until(settled, lambda: {"acked": acked, "saved": turns(faults, conversations)}, timeout)
    for conversation, message_id, role, status, reason in saved:
        if role == "assistant":
            assert status == "complete" or (status in ("partial", "failed") and reason), (message_id, status, reason)
    return saved


def metric(base: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples with `labels` on /metrics (every process of the metrics directory)."""
    response = httpx.get(base + "/metrics", timeout=15)
    assert response.status_code == 200, response.text[:500]
    return sum(sample.value for family in text_string_to_metric_families(response.text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def prefetch_runs(faults: FaultStack) -> int:
    """Prefetch tasks the worker finished so far."""
    return sum(1 for line in faults.stack.log(WORKER).splitlines()
               if "prefetch.prefetch_for_turn[" in line and "succeeded" in line)


@pytest.fixture(autouse=True)
def _no_provisioned_throughput_left(faults: FaultStack) -> Iterator[None]:
    """After any fault: nothing bought (PROVISIONED_THROUGHPUT_ENABLED is off, the model simulated)."""
    assert "PROVISIONED_THROUGHPUT_ENABLED" not in faults.stack.env
    yield
    with faults.db() as conn:
        active = conn.execute("SELECT count(*) FROM throughput_provisionedthroughput WHERE status = ANY(%s)",
                              (list(ACTIVE_THROUGHPUT),)).fetchone()[0]
        creates = conn.execute("SELECT count(*) FROM throughput_throughputaction WHERE action = 'create'").fetchone()[0]
    assert (active, creates) == (0, 0)


async def _outcome(browser: Browser, base: str, text: str, message_id: str) -> list[dict]:
    """What the customer sees for one message on a new socket (a failed handshake is a pseudo-frame)."""
    try:
        async with browser.socket(base) as ws:
            return await browser.ask(ws, text, message_id)
    except (OSError, ConnectionClosed, TimeoutError) as exc:
        return [{"type": "handshake_failed", "error": repr(exc)}]


class RedisOutageTests:
    async def test_redis_stopped_mid_conversation_loses_no_turn_and_prefetch_recovers_after_restart(
            self, faults: FaultStack) -> None:
        browser = Browser.open_store(faults.web)
        async with browser.socket(faults.web) as ws:
            assert _last(await browser.ask(ws, RECOMMEND, "r1"))["type"] == "completed"
            _wait_until(lambda: prefetch_runs(faults) >= 1, lambda: faults.stack.log(WORKER)[-3000:])
            before = _last(await browser.ask(ws, FOLLOW_UP, "r2"))
            assert before["type"] == "completed" and before["metrics"]["prefetch_hit"] is True, before["metrics"]

            faults.redis.stop()
            try:
                during = await browser.ask(ws, "Recommend a seinen manga", "r3")
                opened = await _outcome(browser, faults.web, "Any promotions right now?", "r4")
                store_page = httpx.get(faults.web + "/", headers={"Cookie": browser.cookie}, timeout=15).status_code
            finally:
                faults.redis.start()
        print(f"\nRedis down: open socket {during}; new socket {opened}; store page HTTP {store_page}")
        # Never a hang (FRAME_TIMEOUT), and each attempt ends in a frame the widget understands or a closed socket.
        for frames in (during, opened):
            assert _last(frames)["type"] in ("completed", "error", "closed", "handshake_failed"), frames

        # Redis is back (empty): the chat answers on a new socket and the worker's prefetch hits again.
        runs = prefetch_runs(faults)
        async with browser.socket(faults.web) as ws:
            assert _last(await browser.ask(ws, RECOMMEND, "r5"))["type"] == "completed"
            _wait_until(lambda: prefetch_runs(faults) > runs, lambda: faults.stack.log(WORKER)[-3000:], 45)
            after = _last(await browser.ask(ws, FOLLOW_UP, "r6"))
        assert after["type"] == "completed" and after["metrics"]["prefetch_hit"] is True, after["metrics"]
        assert_no_turn_lost(faults, browser)  # whatever was acked during the outage is saved and answered

    async def test_redis_stopped_the_chat_still_answers_without_its_extras(self, faults: FaultStack) -> None:
        browser = Browser.open_store(faults.web)
        async with browser.socket(faults.web) as ws:
            assert _last(await browser.ask(ws, RECOMMEND, "x1"))["type"] == "completed"
            faults.redis.stop()
            try:
                during = await browser.ask(ws, FOLLOW_UP, "x2")
                opened = await _outcome(browser, faults.web, "Any promotions right now?", "x3")
            finally:
                faults.redis.start()
        assert_no_turn_lost(faults, browser)
        assert _last(during)["type"] == "completed", during  # no prefetch, no cache: slower, but answered
        assert _last(opened)["type"] == "completed", opened


class BrokerOutageTests:
    async def test_celery_broker_down_answers_complete_and_the_skipped_work_is_counted(self, faults: FaultStack) -> None:
        # A broker of its own (the cache Redis stays up) and a web process of its own with its own metrics.
        broker = PrivateRedis(faults.workdir).start()
        metrics_dir = faults.workdir / "broker-metrics"
        metrics_dir.mkdir(exist_ok=True)
        web = faults.stack.start_web("faults-web-broker", extra_env={"CELERY_BROKER_URL": broker.url,
                                                                      "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        try:
            browser = Browser.open_store(web)
            async with browser.socket(web) as ws:
                assert _last(await browser.ask(ws, RECOMMEND, "b1"))["type"] == "completed"
                # Queued once the answer is saved (just after `completed`).
                queued = _wait_until(lambda: metric(web, "mangaassist_tasks_queued_total", result="queued"),
                                     "the first answer's follow-up work queued", 10)
                assert metric(web, "mangaassist_tasks_queued_total", result="skipped") == 0

                broker.stop()
                for number, text in enumerate([FOLLOW_UP, "Is it in stock?", "Recommend a seinen manga"], start=2):
                    started = time.monotonic()
                    frames = await browser.ask(ws, text, f"b{number}")
                    assert _last(frames)["type"] == "completed", frames
                    assert _count(frames, "delta") >= 1 and _last(frames)["text"] == _delta_text(frames)
                    assert time.monotonic() - started < 5  # publishing fails fast: the chat never waits on it
                skipped = metric(web, "mangaassist_tasks_queued_total", result="skipped")
                assert skipped >= 3  # at least one follow-up task per answer, each counted, none queued
                assert metric(web, "mangaassist_tasks_queued_total", result="queued") == queued

                broker.start()  # back (empty): the next answer's work is queued again
                assert _last(await browser.ask(ws, RECOMMEND, "b5"))["type"] == "completed"
                _wait_until(lambda: metric(web, "mangaassist_tasks_queued_total", result="queued") > queued,
                            "a task queued after the broker came back", 10)
            assert_no_turn_lost(faults, browser)
        finally:
            faults.stack.stop(faults.stack.web_processes[web])
            broker.stop()


class DatabaseRestartTests:
    async def test_postgres_restarted_between_turns_the_next_turn_succeeds(self, faults: FaultStack) -> None:
        browser = Browser.open_store(faults.web)
        async with browser.socket(faults.web) as ws:
            assert _last(await browser.ask(ws, RECOMMEND, "p1"))["type"] == "completed"
            assert_no_turn_lost(faults, browser)  # between turns: the answer is saved (see the xfail below)
            runs = prefetch_runs(faults)

            faults.postgres.restart()  # pg_ctl restart -m fast: every pooled connection of web and worker is cut
            for number, text in enumerate([FOLLOW_UP, "Is it in stock?"], start=2):
                frames = await browser.ask(ws, text, f"p{number}")
                assert _last(frames)["type"] == "completed", frames
        # A new socket (session, conversation check) and the readiness check after the restart.
        async with browser.socket(faults.web) as ws:
            assert _last(await browser.ask(ws, "Any promotions right now?", "p4"))["type"] == "completed"
        assert httpx.get(faults.web + "/healthz", timeout=10).status_code == 200
        # The worker reconnects too: the follow-ups' prefetches ran after the restart.
        _wait_until(lambda: prefetch_runs(faults) > runs, lambda: faults.stack.log(WORKER)[-3000:])
        saved = assert_no_turn_lost(faults, browser)
        assert [status for _, _, role, status, _ in saved if role == "assistant"] == ["complete"] * 4


class DatabaseDownAtTheEndOfAnAnswerTests:
    async def test_postgres_down_when_an_answer_ends_the_answer_is_saved_once_it_is_back(
            self, faults: FaultStack) -> None:
        paced = _paced_web(faults)
        browser = Browser.open_store(paced)
        async with browser.socket(paced) as ws:
            streaming = await browser.ask(ws, RECOMMEND, "e1", deltas=3)
            faults.postgres.stop_server()  # down before the answer ends (the model needs no database mid-answer)
            try:
                frames = streaming + await browser.frames(ws)
            finally:
                faults.postgres.start()
        assert _last(frames)["type"] == "completed", frames[-3:]  # the customer has the whole answer
        saved = assert_no_turn_lost(faults, browser, timeout=15)
        assert [(m, role, status) for _, m, role, status, _ in saved] == [("e1", "user", "complete"),
                                                                            ("e1", "assistant", "complete")]


def _paced_web(faults: FaultStack) -> str:
    """A web process whose model streams for seconds (started once, on first use)."""
    if "paced" not in faults.extra:
        faults.extra["paced"] = faults.stack.start_web("faults-web-paced", extra_env=SLOW_MODEL)
    return faults.extra["paced"]


def _indexes(frames: list[dict]) -> list[int]:
    return [f["index"] for f in frames if f["type"] == "delta"]


class DuplicateMessageTests:
    async def test_a_message_id_re_sent_after_a_reconnect_is_answered_once(self, faults: FaultStack) -> None:
        browser = Browser.open_store(faults.web)
        async with browser.socket(faults.web) as ws:
            first = await browser.ask(ws, RECOMMEND, "d1")
        assert _last(first)["type"] == "completed"
        async with browser.socket(faults.web) as ws:  # the widget reconnected and sends the message again
            again = await browser.ask(ws, RECOMMEND, "d1")
        assert [f["type"] for f in again] == ["ack", "completed"], again  # the saved answer, not a new one
        assert _last(again)["text"] == _last(first)["text"]
        assert [p["sku"] for p in _last(again)["products"]] == [p["sku"] for p in _last(first)["products"]]
        saved = assert_no_turn_lost(faults, browser)
        assert [(m, role) for _, m, role, _, _ in saved] == [("d1", "user"), ("d1", "assistant")]

    async def test_a_message_id_re_sent_after_a_cut_mid_answer_continues_it_once(self, faults: FaultStack) -> None:
        paced = _paced_web(faults)
        browser = Browser.open_store(paced)
        async with browser.socket(paced) as ws:
            cut = await browser.ask(ws, RECOMMEND, "d2", deltas=5)  # the connection drops mid-answer
        assert _count(cut, "delta") == 5 and _last(cut)["type"] == "delta"
        async with browser.socket(faults.web) as ws:  # reconnected, to another web process
            again = await browser.ask(ws, RECOMMEND, "d2")
        assert _last(again)["type"] == "completed", again
        assert [f["type"] for f in again[:1]] == ["ack"]
        indexes = _indexes(again)
        assert indexes == list(range(len(indexes))) and len(indexes) > 5  # the whole answer once, then the rest
        assert _delta_text(again).startswith(_delta_text(cut))
        saved = assert_no_turn_lost(faults, browser)
        assert [(m, role) for _, m, role, _, _ in saved] == [("d2", "user"), ("d2", "assistant")]

        def stored() -> tuple[str, str]:
            with faults.db() as conn:
                return conn.execute("SELECT status, text FROM chat_turn WHERE client_message_id = 'd2' AND "
                                    "role = 'assistant'").fetchone()
        time.sleep(1.0)  # the cut producer's own save of what it had said may land after the continuation's
        status, text = stored()
        assert status == "complete", f"saved: {status}, {len(text)} of {len(_last(again)['text'])} characters"
        assert text == _last(again)["text"]


class WebProcessKilledTests:
    async def test_web_process_killed_mid_stream_another_process_resumes_the_answer_once(
            self, faults: FaultStack) -> None:
        paced = _paced_web(faults)
        browser = Browser.open_store(paced)
        async with browser.socket(paced) as ws:
            before = await browser.ask(ws, RECOMMEND, "k1", deltas=15)
            assert _count(before, "delta") == 15 and _last(before)["type"] == "delta"
            killed = faults.stack.web_processes[paced]
            os.killpg(killed.pid, signal.SIGKILL)  # a crash: nothing saved, nothing closed cleanly
            killed.wait(timeout=10)
            before += await browser.frames(ws)
        faults.stack.stop(killed)
        faults.extra.pop("paced")
        assert _last(before)["type"] == "closed", before[-3:]
        seen = _indexes(before)
        assert seen == list(range(len(seen)))

        # The widget reconnects to the other web process and resumes after the last delta it painted.
        async with browser.socket(faults.web) as ws:
            await ws.send(json.dumps({"type": "resume", "id": "k1", "after": seen[-1],
                                      "chars": len(_delta_text(before))}))
            resumed = await browser.frames(ws)
        assert _last(resumed)["type"] == "completed", resumed[-3:]
        indexes = seen + _indexes(resumed)
        assert indexes == list(range(len(indexes))) and len(indexes) > len(seen)  # no gap, no repeat
        completed = _last(resumed)
        assert _delta_text(before) + _delta_text(resumed) == completed["text"]
        saved = assert_no_turn_lost(faults, browser)
        assert [(m, role, status) for _, m, role, status, _ in saved] == [("k1", "user", "complete"),
                                                                            ("k1", "assistant", "complete")]

        # Completed once: a second resume replays the ended answer; nothing is generated or saved again.
        async with browser.socket(faults.web) as ws:
            await ws.send(json.dumps({"type": "resume", "id": "k1", "after": -1}))
            replay = await browser.frames(ws)
        assert _last(replay)["type"] == "completed" and _last(replay)["text"] == completed["text"]
        assert _indexes(replay) == indexes
        with faults.db() as conn:
            records = conn.execute("SELECT count(*) FROM chat_turnrecord WHERE client_message_id = 'k1'").fetchone()[0]
        assert records == 1
        assert assert_no_turn_lost(faults, browser) == saved
