"""/metrics after a real conversation served by two web processes and a Celery worker (DESIGN.md §6).

The session stack's other tests assert absolute counts on its metrics directory and use its
broker, so this test runs its own two daphne processes, worker and Redis server (channel layer,
cache, broker), with their own PROMETHEUS_MULTIPROC_DIR, on the session's PostgreSQL. They use
the Bedrock-like model pace (the session stack answers instantly), so latencies are real numbers.
Every figure is a delta between a scrape before and one after the conversation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row
from websockets.asyncio.client import ClientConnection, connect

from bench.stack import ScaledStack, free_port

pytestmark = pytest.mark.scaled

# Bedrock-like, shortened: first token about 80 ms plus the prefill, then 2 ms per token.
MODEL_PACE = {"LLM_SIMULATED_PROFILE": "bedrock", "LLM_SIM_PREFILL_BASE_MS": "80",
              "LLM_SIM_PREFILL_PER_TOKEN_MS": "0.02", "LLM_SIM_DECODE_MS_PER_TOKEN": "2", "LLM_SIM_JITTER": "0.1"}
PREFETCH_TASK = "prefetch.prefetch_for_turn"
# DESIGN.md §6 histograms observed once per answer, whichever process served it.
PER_ANSWER_HISTOGRAMS = ("mangaassist_llm_first_token_seconds", "mangaassist_llm_total_seconds",
                         "mangaassist_orchestrator_overhead_seconds", "mangaassist_prompt_tokens",
                         "mangaassist_prompt_compression_ratio", "mangaassist_context_assembly_seconds")
# All of them: inter-token once per gap between deltas, client first token once per valid client_metrics frame.
DESIGN_HISTOGRAMS = (*PER_ANSWER_HISTOGRAMS, "mangaassist_llm_inter_token_seconds",
                     "mangaassist_client_first_token_seconds")


@dataclass(frozen=True)
class Scrape:
    """One /metrics page, parsed: every sample with its labels."""

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def of(cls, base: str) -> "Scrape":
        response = httpx.get(base + "/metrics", timeout=10)
        assert response.status_code == 200, response.text[:500]
        return cls([(sample.name, sample.labels, sample.value)
                    for family in text_string_to_metric_families(response.text) for sample in family.samples])

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum over every label set that has `labels` (all processes are already added up)."""
        return sum(value for sample, sample_labels, value in self.samples
                   if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()))


@dataclass
class Answer:
    message_id: str
    served_by: str
    deltas: int
    client_first_token_ms: float
    client_total_ms: float


class Conversation:
    """A browser's side of the conversation: sends questions, times the answers like the widget."""

    def __init__(self, cookie: str) -> None:
        self.headers = {"Cookie": cookie}
        self.id = ""
        self.answers: list[Answer] = []

    def socket(self, base: str) -> Any:
        query = f"?conversation={self.id}" if self.id else ""
        return connect(base.replace("http://", "ws://") + "/ws/chat/" + query, origin=base,
                       additional_headers=self.headers)

    async def ask(self, ws: ClientConnection, base: str, text: str, message_id: str) -> Answer:
        sent = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "id": message_id, "text": text}))
        first_delta: float | None = None
        deltas = 0
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "ack":
                self.id = frame["conversation"]
            elif frame["type"] == "delta":
                first_delta = first_delta or time.perf_counter()
                deltas += 1
            elif frame["type"] in ("completed", "error"):
                break
        done = time.perf_counter()
        assert frame["type"] == "completed" and first_delta is not None, frame
        answer = Answer(message_id, base, deltas, round((first_delta - sent) * 1000, 3), round((done - sent) * 1000, 3))
        self.answers.append(answer)
        return answer


async def synced(ws: ClientConnection) -> None:
    """Frames are handled in order: once `pong` is back, every client_metrics frame before it has been."""
    await ws.send(json.dumps({"type": "ping"}))
    while json.loads(await ws.recv())["type"] != "pong":
        pass


async def report(ws: ClientConnection, message_id: str, first_token_ms: Any, total_ms: Any) -> None:
    await ws.send(json.dumps({"type": "client_metrics", "id": message_id, "first_token_ms": first_token_ms,
                              "total_ms": total_ms}))


def db(stack: ScaledStack) -> psycopg.Connection:
    return psycopg.connect(stack.env["DATABASE_URL"].replace("postgres://", "postgresql://"))


def wait_until(condition: Any, what: Any, timeout: float = 15) -> None:
    """Poll `condition`; on time-out, fail with `what` (a callable is asked then, for the state it saw)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def redis_server_start(stack: ScaledStack, workdir: Path) -> str:
    """A Redis server of this test's own on a free port (stopped with the stack's processes); its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (Debian: apt-get install -y redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    stack.start("metrics-redis", binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", str(workdir))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, lambda: stack.log("metrics-redis")[-2000:], timeout=15)
    client.close()
    return url


@pytest.fixture
def own_stack(scaled_stack: ScaledStack, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two web processes, a worker and a Redis of this test's own, on the session's PostgreSQL; stopped at its end.

    Its own Redis (channel layer, cache, broker): no other test's or engineer's worker takes its
    tasks, and its worker runs no one else's.
    """
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    started_before = list(scaled_stack.processes)
    try:
        redis_url = redis_server_start(scaled_stack, tmp_path)
        # Warmed up before /healthz says ready, as in production (tests/conftest.py turns that off for
        # in-process tests; cold, the first answer's intent-model training blocks the event loop for seconds).
        # A frame per model delta (no coalescing): the client's count of deltas is then the model's, which
        # the inter-token histogram counts gaps of.
        env = {**MODEL_PACE, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "REDIS_URL": redis_url,
               "MANGAASSIST_WARMUP": "true", "CHAT_DELTA_COALESCE_MS": "0"}
        web_a = scaled_stack.start_web("metrics-web-a", extra_env=env)
        web_b = scaled_stack.start_web("metrics-web-b", extra_env=env)
        # Two threads: a slow speculative answer (prefetch.speculate) must not hold up the quick prefetch
        # queued beside it until it expires. One process either way, so one set of metric files.
        worker = scaled_stack.start("metrics-worker", sys.executable, "-m", "celery", "-A", "mangaassist", "worker",
                                    "--pool=threads", "--concurrency=2", "--loglevel=INFO", "-Q", "mangaassist",
                                    "-n", "metrics@%h", extra_env=env)
        scaled_stack.wait_for_log("metrics-worker", " ready.")
        yield {"web_a": web_a, "web_b": web_b, "worker": worker, "metrics_dir": metrics_dir,
               "pids": {base: scaled_stack.web_processes[base].pid for base in (web_a, web_b)}}
    finally:
        for process in reversed([p for p in scaled_stack.processes if p not in started_before]):
            scaled_stack.stop(process)  # Redis last: the others may still be talking to it


class MetricsScaledTests:
    async def test_every_design_metric_counts_the_answers_of_both_web_processes(
        self, scaled_stack: ScaledStack, own_stack: dict[str, Any]
    ) -> None:
        web_a, web_b = own_stack["web_a"], own_stack["web_b"]
        page = httpx.get(web_a + "/")
        conversation = Conversation(f"sessionid={page.cookies['sessionid']}")
        before = Scrape.of(web_a)

        def prefetches(scrape: Scrape) -> tuple[float, float]:
            """Prefetches queued by the web processes, and run by the worker, since `before`."""
            queued = scrape.value("mangaassist_tasks_queued_total", task=PREFETCH_TASK, result="queued") - \
                before.value("mangaassist_tasks_queued_total", task=PREFETCH_TASK, result="queued")
            ran = (scrape.value("mangaassist_prefetch_seconds_count")
                   - before.value("mangaassist_prefetch_seconds_count"))
            return queued, ran

        def settle() -> None:
            """Wait for the last answer's record, its prefetch (if it queued one) and the worker's run of it."""
            queued_before, _ = prefetches(Scrape.of(web_a))
            answered, since = len(conversation.answers), time.monotonic()
            seen: dict[str, float] = {}

            def settled() -> bool:
                with db(scaled_stack) as conn:
                    seen["records"] = conn.execute("SELECT count(*) FROM chat_turnrecord WHERE conversation_id = %s",
                                                   (conversation.id,)).fetchone()[0]
                seen["queued"], seen["ran"] = prefetches(Scrape.of(web_a))
                # The prefetch is queued right after the record is saved; an answer that predicts nothing
                # queues none, so after a second without one, there is none to wait for.
                return (seen["records"] == answered and seen["ran"] == seen["queued"]
                        and (seen["queued"] > queued_before or time.monotonic() - since > 1))

            wait_until(settled, lambda: f"answer {answered}'s record and prefetch: {seen}, worker log:\n"
                                        f"{scaled_stack.log('metrics-worker')[-3000:]}")

        async def turn(ws: ClientConnection, base: str, text: str, message_id: str) -> Answer:
            answer = await conversation.ask(ws, base, text, message_id)
            # So the next turn can find what the prefetch warmed. The client_metrics frame goes after this:
            # one that arrives before the answer's record is saved updates no record (chat/consumers.py).
            await asyncio.to_thread(settle)
            return answer

        # On web-a: a recommendation, then a question about one of the series it showed.
        async with conversation.socket(web_a) as ws:
            first = await turn(ws, web_a, "Recommend a shonen manga like Dragon Ball", "m1")
            await report(ws, "m1", first.client_first_token_ms, first.client_total_ms)
            second = await turn(ws, web_a, "Tell me more about the second one", "m2")
            await report(ws, "m2", second.client_first_token_ms, second.client_total_ms)
            await synced(ws)
        # On web-b, the same conversation (no sticky routing).
        async with conversation.socket(web_b) as ws:
            for message_id, text in (("m3", "Is it in stock?"), ("m4", "Recommend a seinen manga"),
                                     ("m5", "Tell me more about the second one")):
                answer = await turn(ws, web_b, text, message_id)
                await report(ws, message_id, answer.client_first_token_ms, answer.client_total_ms)
            # Ignored: an answer another socket served, an id never asked, a second report of m3.
            await report(ws, "m1", 111.0, 222.0)
            await report(ws, "never-asked", 111.0, 222.0)
            await report(ws, "m3", 111.0, 222.0)
            # Past five minutes: the first token is dropped, the plausible total is kept.
            last = await turn(ws, web_b, "Any promotions right now?", "m6")
            await report(ws, "m6", 400_000, last.client_total_ms)
            await synced(ws)
        answers = conversation.answers
        assert {a.served_by for a in answers} == {web_a, web_b}

        after, other = Scrape.of(web_a), Scrape.of(web_b)
        # Either process reports the same sums: the two web processes and the worker, added up.
        for name in (*(f"{h}_{part}" for h in DESIGN_HISTOGRAMS for part in ("count", "sum")),
                     "mangaassist_prefetch_lookups_total"):
            assert after.value(name) == other.value(name), name
        files = {path.name for path in own_stack["metrics_dir"].iterdir()}
        for pid in (*own_stack["pids"].values(), own_stack["worker"].pid):
            assert f"histogram_{pid}.db" in files, (pid, files)

        def delta(name: str, **labels: str) -> float:
            return after.value(name, **labels) - before.value(name, **labels)

        for name in DESIGN_HISTOGRAMS:
            assert {f"{name}_count", f"{name}_sum", f"{name}_bucket"} <= after.names(), name
        for result in ("hit", "miss"):
            assert after.value("mangaassist_prefetch_lookups_total", result=result) > 0, result

        with db(scaled_stack) as conn:
            conn.row_factory = dict_row
            records = {r["client_message_id"]: r for r in conn.execute(
                "SELECT * FROM chat_turnrecord WHERE conversation_id = %s", (conversation.id,)).fetchall()}
        assert set(records) == {a.message_id for a in answers}
        assert all(r["status"] == "complete" and r["backend"] == "simulated" for r in records.values())
        n = len(answers)
        # An answer speculation prepared (prefetch.speculate) is sent at once, not streamed at the model's pace.
        streamed = [a for a in answers if not records[a.message_id]["speculative"]]
        assert streamed, records

        # One observation per answer, whichever process served it; the sums are the records' own figures.
        for name in PER_ANSWER_HISTOGRAMS:
            assert delta(f"{name}_count") == n, name
            assert delta(f"{name}_bucket", le="+Inf") == n, name
        first_token = delta("mangaassist_llm_first_token_seconds_sum")
        total = delta("mangaassist_llm_total_seconds_sum")
        assert first_token == pytest.approx(sum(r["first_token_ms"] for r in records.values()) / 1000, abs=1e-3)
        assert total == pytest.approx(sum(r["total_ms"] for r in records.values()) / 1000, abs=1e-3)
        assert all(0 < r["first_token_ms"] < r["total_ms"] for r in records.values())
        assert len(streamed) * 0.08 <= first_token < total < n * 8.0  # the model's pace .. the first-token deadline
        # Nothing streamed comes faster than the simulated prefill.
        assert delta("mangaassist_llm_first_token_seconds_bucket", le="0.05") <= n - len(streamed)

        # Inter-token gaps: one per delta after a streamed answer's first, about the 2 ms decode pace.
        gaps = delta("mangaassist_llm_inter_token_seconds_count")
        assert gaps == sum(a.deltas - 1 for a in streamed) > 0
        assert 0.001 < delta("mangaassist_llm_inter_token_seconds_sum") / gaps < 0.05

        overhead = delta("mangaassist_orchestrator_overhead_seconds_sum")
        assert overhead == pytest.approx(sum(r["overhead_ms"] for r in records.values()) / 1000, abs=1e-3)
        assert 0 < overhead < first_token  # the service's part comes before the model's first token

        # Prompt tokens between 50 and 2,000 each (the buckets say so per answer), as recorded.
        assert delta("mangaassist_prompt_tokens_bucket", le="50.0") == 0
        assert delta("mangaassist_prompt_tokens_bucket", le="2000.0") == n
        if len(streamed) == n:  # a prepared answer's record keeps the prompt it was prepared with
            assert delta("mangaassist_prompt_tokens_sum") == sum(r["prompt_tokens"] for r in records.values())
        # Compression ratio in (0, 1] per answer; the mean is the records' mean.
        assert delta("mangaassist_prompt_compression_ratio_bucket", le="1.0") == n
        ratio = delta("mangaassist_prompt_compression_ratio_sum")
        assert ratio == pytest.approx(sum(r["compression_ratio"] for r in records.values()), abs=1e-6)
        assert all(0 < r["compression_ratio"] <= 1 for r in records.values())

        assembly = delta("mangaassist_context_assembly_seconds_sum")
        assert assembly == pytest.approx(sum(r["assembly_ms"] for r in records.values()) / 1000, abs=1e-3)
        assert 0 < assembly and delta("mangaassist_context_assembly_seconds_bucket", le="2.0") == n

        # The browser's figures: one per answer this socket served, the implausible first token dropped.
        valid = [a for a in answers if a.message_id != "m6"]
        assert delta("mangaassist_client_first_token_seconds_count") == len(valid)
        assert delta("mangaassist_client_first_token_seconds_sum") == pytest.approx(
            sum(a.client_first_token_ms for a in valid) / 1000, abs=1e-6)
        assert delta("mangaassist_client_total_seconds_count") == n
        assert delta("mangaassist_client_total_seconds_sum") == pytest.approx(
            sum(a.client_total_ms for a in answers) / 1000, abs=1e-6)
        for answer in answers:
            record = records[answer.message_id]
            expected_first = None if answer.message_id == "m6" else answer.client_first_token_ms
            assert (record["client_first_token_ms"], record["client_total_ms"]) == \
                (expected_first, answer.client_total_ms), answer.message_id
            if expected_first is not None:  # the browser waits for everything the server measured, and more
                assert record["first_token_ms"] <= expected_first

        # Prefetch: every follow-up with a prediction and something to find is one lookup, hit or miss.
        lookups = [r for r in records.values() if r["prefetch_hit"] is not None]
        assert records["m1"]["prefetch_hit"] is None  # the first turn has nothing to look up
        assert len(lookups) >= 3, {k: r["prefetch_hit"] for k, r in records.items()}
        assert delta("mangaassist_prefetch_lookups_total", result="hit") == sum(r["prefetch_hit"] for r in lookups) >= 1
        assert delta("mangaassist_prefetch_lookups_total", result="miss") == \
            sum(not r["prefetch_hit"] for r in lookups)
        # The worker's own metrics reach /metrics of a web process: one prefetch run per queued prefetch.
        queued = delta("mangaassist_tasks_queued_total", task=PREFETCH_TASK, result="queued")
        assert delta("mangaassist_prefetch_seconds_count") == queued >= len(lookups)
        assert delta("mangaassist_prefetch_keys_total") > 0
