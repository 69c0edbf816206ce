"""Relay overhead side by side: one upstream, one load, three paths to it.

    .venv/bin/python bench/peer_litellm.py [--users 10,100] [--duration 30] [--think 3]

The upstream is the test suite's OpenAI-compatible SSE server (tests/fakes/openai_sse.py) in its
own process, at a fixed pace (first chunk after 200 ms, then a word every 5 ms, 120 words), so
anything above 200 ms is what the path in between adds. The same customers (bench/data scripts,
think times) then stream through:

- direct: the OpenAI chat/completions stream straight from the upstream (the floor);
- LiteLLM: LiteLLM's proxy (installed from PyPI into bench/.venv-litellm, its own venv, one
  worker), a model entry `openai/bench` pointed at the upstream;
- MangaAssist: the chat socket of one embedded daphne with LLM_BACKEND=openai pointed at the
  upstream; its whole pipeline (intent, assembly, compression) runs before the model call, so
  its pre-model time (`metrics.overhead_ms`) is shown apart from the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.load import targets  # noqa: E402
from bench.load.client import ConversationRecord, TurnObservation  # noqa: E402
from bench.load.runner import PassResult, load_scripts, run_pass, warm_up  # noqa: E402
from bench.load.sampler import UsageSampler  # noqa: E402
from bench.report import pcts  # noqa: E402
from bench.stack import free_port  # noqa: E402

LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"
LITELLM_KEY = "sk-bench-local-only-0123456789"  # the proxy refuses to start without a master key
UPSTREAM_FIRST_MS = 200.0
UPSTREAM_DECODE_MS = 5.0
UPSTREAM_WORDS = 120
SYSTEM = "You are MangaAssist, the assistant of an online manga store. Answer briefly."


def litellm_install() -> str | None:
    """Make bench/.venv-litellm with LiteLLM's proxy; None when ready, otherwise why it cannot be."""
    litellm = LITELLM_VENV / "bin" / "litellm"
    if litellm.exists():
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", LITELLM_REQUIREMENT],
                       check=True, capture_output=True, text=True, timeout=1200)
    except subprocess.CalledProcessError as exc:
        return f"pip install {LITELLM_REQUIREMENT} failed: {(exc.stderr or exc.stdout or '')[-800:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not make {LITELLM_VENV}: {exc}"
    return None if litellm.exists() else f"{litellm} missing after the install"


def litellm_start(upstream_url: str, logs: Path) -> tuple[subprocess.Popen, str]:
    """LiteLLM's proxy, one worker, on a free port; (process, base URL) once it is live."""
    config = logs / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n", encoding="utf-8")
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    for name in ("DATABASE_URL", "REDIS_URL"):  # the proxy would use them (spend logs, caching): not for a relay test
        env.pop(name, None)
    log = open(logs / "litellm.log", "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                                "--port", str(port), "--num_workers", "1"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True, cwd=logs)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(base + "/health/liveliness", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"LiteLLM did not start: {(logs / 'litellm.log').read_text()[-2000:]}")


async def _stream_turn(client: httpx.AsyncClient, url: str, text: str, headers: dict[str, str]) -> TurnObservation:
    observation = TurnObservation(turn=0, text=text)
    payload = {"model": "bench", "stream": True, "max_tokens": 400,
               "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]}
    sent = observation.sent_at = time.perf_counter()
    first = last = None
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            if response.status_code != 200:
                observation.error = f"http_{response.status_code}"
                return observation
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                content = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
                if not content:
                    continue
                now = time.perf_counter()
                if first is None:
                    first = now
                    observation.first_token_ms = (now - sent) * 1000
                elif last is not None:
                    gap = (now - last) * 1000
                    observation.max_gap_ms = max(observation.max_gap_ms or 0.0, gap)
                last = now
                observation.deltas += 1
        observation.total_ms = (time.perf_counter() - sent) * 1000
        observation.completed = {"type": "completed", "metrics": {}}
        if first is not None and last is not None:
            observation.stream_ms = (last - first) * 1000
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        observation.error = type(exc).__name__
    return observation


async def http_pass(result: PassResult, url: str, scripts: list[dict[str, Any]], *, headers: dict[str, str],
                    ramp: float, rounds: int, seed: int) -> None:
    """The same customers as run_pass, each message one streamed chat/completions call."""
    users = result.users
    started = time.perf_counter()
    stop_at = started + result.duration
    limits = httpx.Limits(max_connections=users + 10, max_keepalive_connections=users + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10), limits=limits) as client:
        async def customer(user: int) -> None:
            rng = random.Random(seed * 1000 + user)
            await asyncio.sleep(ramp * user / users)
            for round_ in range(rounds):
                if time.perf_counter() >= stop_at:
                    return
                script = scripts[(user + round_ * users) % len(scripts)]
                record = ConversationRecord(script=script["id"], user=user, base=url, started_at=time.perf_counter(),
                                            script_turns=script["turns"])
                result.conversations.append(record)
                for n, turn in enumerate(script["turns"]):
                    if n:
                        await asyncio.sleep(result.think * rng.uniform(0.8, 1.2))
                        if time.perf_counter() >= stop_at:
                            break
                    observation = await _stream_turn(client, url, turn["text"], headers)
                    observation.turn = n
                    record.turns.append(observation)
                record.finished = len(record.turns) == len(script["turns"]) and not any(t.error for t in record.turns)
                await asyncio.sleep(result.think * rng.uniform(0.8, 1.2))

        await asyncio.gather(*(customer(user) for user in range(users)))
    result.seconds = time.perf_counter() - started


def _warm_up(paths: list[tuple[str, str | None, dict[str, str], int | None]], bases: list[str]) -> None:
    """One answer through every path before the clock starts (connections, first-use costs)."""
    async def warm() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for _, url, headers, _ in paths:
                if url is not None:
                    await _stream_turn(client, url, "hello", headers)

    asyncio.run(warm())
    warm_up(bases)


def _row(path: str, users: int, data: dict[str, Any], relay_cpu: float | None) -> dict[str, Any]:
    turns = [t for c in data["conversations"] for t in c["turns"]]
    answered = [t for t in turns if t.get("total_ms") is not None and not t.get("error")]
    gaps = [t["stream_ms"] / (t["deltas"] - 1) for t in answered if t.get("stream_ms") and t.get("deltas", 0) > 1]
    row = {"path": path, "users": users, "answered": len(answered),
           "errors": sum(1 for t in turns if t.get("error")) + sum(1 for c in data["conversations"] if c.get("error")),
           "first_token_ms": pcts(t["first_token_ms"] for t in answered), "gap_ms": pcts(gaps),
           "relay_cpu_percent": relay_cpu, "_first": [t["first_token_ms"] for t in answered if t.get("first_token_ms")]}
    pre_model = [t["metrics"]["overhead_ms"] for t in answered if (t.get("metrics") or {}).get("overhead_ms") is not None]
    if pre_model:
        row["pre_model_ms"] = pcts(pre_model)
        row["relay_only_ms"] = pcts(t["first_token_ms"] - t["metrics"]["overhead_ms"] for t in answered
                                    if (t.get("metrics") or {}).get("overhead_ms") is not None)
    return row


def compare(*, users: list[int], duration: float, think: float, logs: Path,
            template: targets.EmbeddedTemplate | None = None, progress: bool = True, seed: int = 7,
            rounds: int = 3, ramp: float = 5.0) -> dict[str, Any]:
    """Run the three paths at each load; rows for the report (bench/report.py `peer_markdown`)."""
    out: dict[str, Any] = {"upstream": f"tests/fakes/openai_sse.py in its own process, first chunk after "
                                       f"{UPSTREAM_FIRST_MS:.0f} ms, {UPSTREAM_WORDS} words at one per "
                                       f"{UPSTREAM_DECODE_MS:.0f} ms", "upstream_first_ms": UPSTREAM_FIRST_MS,
                           "rows": [], "verdicts": []}
    why = litellm_install()
    if why:
        out["litellm_unavailable"] = why
        print(f"LiteLLM cannot run: {why}", file=sys.stderr)
    scripts = load_scripts()
    upstream = targets.upstream_start("openai", "--first-ms", str(UPSTREAM_FIRST_MS), "--decode-ms",
                                      str(UPSTREAM_DECODE_MS), "--words", str(UPSTREAM_WORDS), logs=logs)
    litellm = None
    target = None
    try:
        paths: list[tuple[str, str | None, dict[str, str], int | None]] = [
            ("direct", upstream.url + "/chat/completions", {}, None)]
        if not why:
            litellm, litellm_base = litellm_start(upstream.url, logs)
            paths.append(("LiteLLM proxy", litellm_base + "/v1/chat/completions",
                          {"Authorization": f"Bearer {LITELLM_KEY}"}, litellm.pid))
        template = template or targets.EmbeddedTemplate(logs)
        target = targets.embedded_start(template=template, pipeline="optimized",
                                        env=targets.profile_env("openai-fake", upstream.url), logs=logs,
                                        name="peer-mangaassist")
        paths.append(("MangaAssist (openai backend)", None, {}, target.pids["web (daphne)"]))
        _warm_up(paths, target.bases)
        for count in users:
            for path, url, headers, relay_pid in paths:
                label = f"peer/{path}/{count}"
                print(f"    {label}", flush=True)
                result = PassResult(label=label, mode="peer", profile="openai-fake", pipeline="optimized",
                                    users=count, think=think, duration=duration)
                pids = {"model upstream (fake)": upstream.process.pid}
                if relay_pid:
                    pids["relay"] = relay_pid
                with UsageSampler(pids) as sampler:
                    if url is None:
                        asyncio.run(run_pass(result, target.bases, scripts, ramp=min(ramp, duration / 4), rounds=rounds,
                                             seed=seed, progress=progress))
                    else:
                        asyncio.run(http_pass(result, url, scripts, headers=headers, ramp=min(ramp, duration / 4),
                                              rounds=rounds, seed=seed))
                relay_cpu = next((u["cpu_mean_percent"] for u in sampler.summaries() if u["name"] == "relay"), None)
                out["rows"].append(_row(path, count, result.to_json(), relay_cpu))
    finally:
        if target is not None:
            target.stop()
        if litellm is not None:
            litellm.terminate()
            try:
                litellm.wait(timeout=15)
            except subprocess.TimeoutExpired:
                litellm.kill()
        upstream.stop()
    for count in users:
        rows = {r["path"]: r for r in out["rows"] if r["users"] == count}
        direct = rows.get("direct")
        for row in rows.values():
            for q in ("p50", "p95"):
                ours, floor = row["first_token_ms"].get(q), direct["first_token_ms"].get(q) if direct else None
                row[f"overhead_vs_direct_{q}"] = round(ours - floor, 2) if ours is not None and floor is not None else None
            row.pop("_first", None)
        lite, ours = rows.get("LiteLLM proxy"), rows.get("MangaAssist (openai backend)")
        if lite and ours:
            out["verdicts"].append(
                f"{count} users: relay overhead vs direct, p50 / p95: LiteLLM {lite['overhead_vs_direct_p50']} / "
                f"{lite['overhead_vs_direct_p95']} ms; MangaAssist {ours['overhead_vs_direct_p50']} / "
                f"{ours['overhead_vs_direct_p95']} ms (of which its pre-model pipeline p50 "
                f"{(ours.get('pre_model_ms') or {}).get('p50')} ms)")
    if why:
        out["verdicts"].append(f"LiteLLM not measured: {why}")
    notes = []
    for row in out["rows"]:
        if row.get("pre_model_ms"):
            notes.append(f"MangaAssist at {row['users']} users: pre-model pipeline p50/p95 "
                         f"{row['pre_model_ms']['p50']}/{row['pre_model_ms']['p95']} ms; client first token minus it "
                         f"p50/p95 {row['relay_only_ms']['p50']}/{row['relay_only_ms']['p95']} ms "
                         f"(upstream {UPSTREAM_FIRST_MS:.0f} ms)")
    out["mangaassist_note"] = " ".join(notes)
    return out


def main() -> int:
    from bench.common import RESULTS
    from bench.report import peer_markdown

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="10,100")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--think", type=float, default=3.0)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="mangaassist-bench-peer-"))
    result = compare(users=[int(u) for u in args.users.split(",")], duration=args.duration, think=args.think, logs=logs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peer.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("\n".join(peer_markdown(result)))
    print("\n".join(result["verdicts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
