"""Speculation evaluation: multi-turn conversations through the real WebSocket path, with and without.

Starts scaled mode for real (PostgreSQL, Redis, a daphne web process, a Celery worker), with the
simulated model at its Bedrock-like pace, and replays bench/data/followups.json (conversations the
project wrote: a recommendation, then follow-ups of every kind) twice in one run: speculation
off, then on; prefetch is on in both. Customers read before they type (think time). Prints, side
by side: the prefetch hit rate, the speculative token cost, and the first token the client
perceived on follow-ups, predictable ones and all of them, with the ratio on/off. It also checks
that every prepared answer shown is exactly the one the model writes for that question.

    .venv/bin/python bench/speculation.py [--conversations N] [--concurrency C] [--think SECONDS]

Needs Redis and PostgreSQL (REDIS_URL / TEST_POSTGRES_URL as for the scaled tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.common import RESULTS, percentile  # noqa: E402
from bench.load.client import converse  # noqa: E402
from bench.stack import POSTGRES_URL, REDIS_URL, ScaledStack, fresh_database, reachable  # noqa: E402

FOLLOWUPS = ROOT / "bench" / "data" / "followups.json"
BENCH_DATABASE = "mangaassist_bench_speculation"
BENCH_REDIS = REDIS_URL.rsplit("/", 1)[0] + "/12"


@dataclass
class TurnResult:
    conversation: str
    turn: int
    kind: str
    text: str
    first_token_ms: float | None = None
    total_ms: float | None = None
    answer: str = ""
    intent: str = ""
    speculative: bool = False
    speculation: str = ""  # the server's verdict on a prepared answer: served or discarded_*
    products: list[str] = field(default_factory=list)
    server_first_token_ms: float | None = None
    assembly_ms: float | None = None
    degraded: dict[str, str] = field(default_factory=dict)  # context sources that missed their deadline
    prefetch_hit: bool | None = None
    error: str | None = None


@dataclass
class PassResult:
    name: str
    turns: list[TurnResult] = field(default_factory=list)
    speculations: dict[str, float] = field(default_factory=dict)
    speculative_tokens: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _metrics(base: str) -> dict[str, dict[str, float]]:
    """The speculation counters on /metrics (web and worker together: multiprocess mode)."""
    wanted = {"mangaassist_speculations": "result", "mangaassist_speculative_tokens": "kind"}
    out: dict[str, dict[str, float]] = {name: {} for name in wanted}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=10).text):
        if family.name in wanted:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    label = sample.labels[wanted[family.name]]
                    out[family.name][label] = out[family.name].get(label, 0.0) + sample.value
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


async def _conversation(base: str, spec: dict[str, Any], think: float, rng: random.Random,
                        pass_name: str) -> list[TurnResult]:
    cookie = httpx.get(base + "/", timeout=10).cookies["sessionid"]
    observed = await converse(base, spec["turns"], spec.get("page") or {}, think=think, rng=rng,
                              message_prefix=f"{pass_name}-{spec['id']}", cookie=cookie)
    results = []
    for n, (turn, seen) in enumerate(zip(spec["turns"], observed)):
        result = TurnResult(conversation=spec["id"], turn=n, kind=turn["kind"], text=turn["text"],
                            first_token_ms=seen.first_token_ms, error=seen.error)
        if seen.completed is not None:
            metrics = seen.metrics
            result.total_ms = seen.total_ms
            result.answer = seen.completed["text"]
            result.intent, result.prefetch_hit = metrics.get("intent", ""), metrics.get("prefetch_hit")
            result.speculative = bool(metrics.get("speculative"))
            result.speculation = metrics.get("speculation") or ""
            result.products = [p["sku"] for p in seen.completed["products"]]
            result.server_first_token_ms = metrics.get("first_token_ms")
            result.assembly_ms = metrics.get("assembly_ms")
            result.degraded = metrics.get("degraded") or {}
        results.append(result)
    return results


async def _replay(base: str, conversations: list[dict], *, name: str, concurrency: int, think: float,
                  seed: int) -> PassResult:
    result = PassResult(name)
    before = _metrics(base)
    started = time.perf_counter()
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(spec: dict, rng: random.Random) -> list[TurnResult]:
        nonlocal done
        async with gate:
            turns = await _conversation(base, spec, think, rng, name)
        done += 1
        print(f"\r  {name}: {done}/{len(conversations)} conversations", end="", flush=True)
        return turns

    batches = await asyncio.gather(*(one(spec, random.Random(seed + n)) for n, spec in enumerate(conversations)))
    print()
    result.seconds = time.perf_counter() - started
    result.turns = [turn for batch in batches for turn in batch]
    after = _metrics(base)
    result.speculations = _delta(after["mangaassist_speculations"], before["mangaassist_speculations"])
    result.speculative_tokens = _delta(after["mangaassist_speculative_tokens"],
                                       before["mangaassist_speculative_tokens"])
    return result


def _speculation(stack: ScaledStack, enabled: bool) -> None:
    """Switch speculation as a PM would (the settings row; its signal invalidates every process's copy)."""
    stack.manage("shell", "-c", (
        "from prefetch.models import PrefetchSettings\n"
        "from prefetch.services import transitions_starting_values_install\n"
        "transitions_starting_values_install()\n"
        "row = PrefetchSettings.objects.get()\n"
        f"row.speculation_enabled = {enabled!r}\n"
        "row.save()\n"))


def _first_tokens(turns: list[TurnResult], kinds: set[str] | None) -> list[float]:
    return [t.first_token_ms for t in turns
            if t.turn > 0 and t.first_token_ms is not None and (kinds is None or t.kind in kinds)]


def _row(label: str, off: list[float], on: list[float]) -> str:
    p50_off, p50_on = percentile(off, 50), percentile(on, 50)
    p95_off, p95_on = percentile(off, 95), percentile(on, 95)
    return (f"| {label} | {len(on)} | {p50_off:.0f} | {p50_on:.0f} | {p50_on / p50_off:.2f} "
            f"| {p95_off:.0f} | {p95_on:.0f} | {p95_on / p95_off:.2f} |")


def _hit_rate(turns: list[TurnResult]) -> tuple[int, int]:
    looked = [t for t in turns if t.turn > 0 and t.prefetch_hit is not None]
    return sum(1 for t in looked if t.prefetch_hit), len(looked)


def _same_context(on: TurnResult, off: TurnResult, previous: dict[tuple[str, int], tuple[TurnResult, TurnResult]]) -> bool:
    """Were both passes' answers written from the same context: the same products on this turn and
    the one before, and no source that missed its deadline in the off pass? (Under load a source
    can miss it in one pass and not the other; then the answers differ rightly. A prepared answer
    is only shown when the live context agrees with it, so the on pass's context is complete.)"""
    before = previous.get((on.conversation, on.turn - 1))
    return (on.products == off.products and not off.degraded and before is not None
            and before[0].products == before[1].products)


def _first_listed_before(turn: TurnResult, pairs: dict[tuple[str, int], tuple[TurnResult, TurnResult]]) -> list[str]:
    """The first product the answer before `turn` listed (in the same pass): what a prepared answer is about."""
    before = pairs.get((turn.conversation, turn.turn - 1))
    return before[0].products[:1] if before else []


def report(off: PassResult, on: PassResult) -> dict[str, Any]:
    reference = {(t.conversation, t.turn): t for t in off.turns}
    pairs = {(t.conversation, t.turn): (t, reference[(t.conversation, t.turn)]) for t in on.turns}
    served = [t for t in on.turns if t.speculative]
    comparable = [t for t in served if _same_context(t, reference[(t.conversation, t.turn)], pairs)]
    wrong = [t for t in comparable if t.answer != reference[(t.conversation, t.turn)].answer]
    off_product = [t for t in served if t.products != _first_listed_before(t, pairs)]
    errors = [t for t in off.turns + on.turns if t.error]
    predictable = _first_tokens(on.turns, {"predictable"})
    lines = [
        f"Conversations: {len({t.conversation for t in on.turns})}, turns per pass: {len(on.turns)} "
        f"(follow-ups: {sum(1 for t in on.turns if t.turn > 0)}, predictable: {len(predictable)}); "
        f"errors: {len(errors)}",
        "",
        "Perceived first token of follow-ups (client side, ms), speculation off vs on:",
        "",
        "| follow-ups | n | p50 off | p50 on | ratio | p95 off | p95 on | ratio |",
        "|---|---|---|---|---|---|---|---|",
        _row("predictable (\"tell me more about the first one\")", _first_tokens(off.turns, {"predictable"}),
             predictable),
        _row("all follow-ups", _first_tokens(off.turns, None), _first_tokens(on.turns, None)),
        _row("other follow-ups (not predicted)", _first_tokens(off.turns, {"specific", "other_product", "other_intent",
                                                                          "opening"}),
             _first_tokens(on.turns, {"specific", "other_product", "other_intent", "opening"})),
        "",
    ]
    for result in (off, on):
        hits, looked = _hit_rate(result.turns)
        lines.append(f"Prefetch hit rate, speculation {result.name}: {hits}/{looked} = "
                     f"{hits / looked:.0%}" if looked else f"Prefetch hit rate, {result.name}: no lookups")
    tokens = on.speculative_tokens
    total_tokens = sum(tokens.values())
    lines += [
        f"Speculative tokens (on): prompt {tokens.get('prompt', 0):.0f}, output {tokens.get('output', 0):.0f}; "
        f"{total_tokens / max(1, len({t.conversation for t in on.turns})):.0f} per conversation; "
        f"{total_tokens / max(1, len(served)):.0f} per answer served",
        "Speculations (on): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(on.speculations.items())),
        f"Prepared answers shown: {len(served)}; compared with the model's own answer to the same question in "
        f"the same context (off pass): {len(comparable)}, different: {len(wrong)}; shown on a turn that was not "
        f"the predictable kind: {sum(1 for t in served if t.kind != 'predictable')}; about another product than "
        f"the first one listed: {len(off_product)}",
        "Predictable follow-ups not served, by verdict: " + ", ".join(
            f"{verdict or 'nothing prepared in time'} {n}" for verdict, n in sorted(Counter(
                t.speculation for t in on.turns if t.kind == "predictable" and not t.speculative).items())),
        f"Server-side first token of served answers, p50/p95: "
        f"{percentile([t.server_first_token_ms for t in served if t.server_first_token_ms], 50):.0f}/"
        f"{percentile([t.server_first_token_ms for t in served if t.server_first_token_ms], 95):.0f} ms "
        f"(assembly p50 {percentile([t.assembly_ms for t in served if t.assembly_ms], 50):.0f} ms)",
    ]
    text = "\n".join(lines)
    return {"text": text, "served": len(served), "wrong": len(wrong) + len(off_product), "errors": len(errors),
            "predictable_ratio_p50": percentile(predictable, 50) / percentile(_first_tokens(off.turns, {"predictable"}), 50)
            if predictable else None,
            "hit_rate_on": _hit_rate(on.turns), "speculative_tokens": tokens, "speculations": on.speculations}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=0, help="replay only the first N (default: all)")
    parser.add_argument("--concurrency", type=int, default=8, help="conversations at once (default 8)")
    parser.add_argument("--think", type=float, default=2.5, help="seconds a customer reads before the next message")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for service, url, port in (("Redis", REDIS_URL, 6379), ("PostgreSQL", POSTGRES_URL, 5432)):
        if not reachable(url, port):
            print(f"bench/speculation.py needs {service} at {url}, which is not reachable", file=sys.stderr)
            return 2
    conversations = json.loads(FOLLOWUPS.read_text(encoding="utf-8"))
    if args.conversations:
        conversations = conversations[: args.conversations]

    import os

    import redis

    redis.Redis.from_url(BENCH_REDIS).flushdb()
    env = {**os.environ, "REDIS_URL": BENCH_REDIS, "DATABASE_URL": fresh_database(BENCH_DATABASE),
           "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="mangaassist-bench-metrics-"),
           "LLM_BACKEND": "simulated", "LLM_SIMULATED_PROFILE": "bedrock", "PYTHONUNBUFFERED": "1",
           # All the load comes from one address: the per-IP flood limit would refuse a store's worth of customers.
           "CHAT_RATE_LIMIT_PER_IP": "1000000", "DJANGO_LOG_LEVEL": "WARNING"}
    stack = ScaledStack(env=env, processes=[], logs=Path(tempfile.mkdtemp(prefix="mangaassist-bench-logs-")))
    try:
        print("Starting PostgreSQL database, web process and Celery worker (scaled mode) ...")
        stack.manage("migrate", "--noinput")
        stack.manage("load_demo_catalog")
        stack.manage("load_demo_store")
        base = stack.start_web("web")
        stack.start("worker", sys.executable, "-m", "celery", "-A", "mangaassist", "worker", "--concurrency=4",
                    "--loglevel=INFO", "-Q", "mangaassist,mangaassist.speculation")
        stack.wait_for_log("worker", " ready.")
        results = {}
        for name, enabled in (("off", False), ("on", True)):
            _speculation(stack, enabled)
            results[name] = asyncio.run(_replay(base, conversations, name=name, concurrency=args.concurrency,
                                                think=args.think, seed=args.seed))
    finally:
        stack.stop_all()
    summary = report(results["off"], results["on"])
    print()
    print(summary["text"])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "speculation.json"
    out.write_text(json.dumps({"args": vars(args), "summary": {k: v for k, v in summary.items() if k != "text"},
                               "passes": {name: asdict(r) for name, r in results.items()}}, ensure_ascii=False,
                              indent=1, default=str))
    print(f"\nPer-turn results: {out.relative_to(ROOT)}; logs: {stack.logs}")
    return 1 if summary["wrong"] or summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
