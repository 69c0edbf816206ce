"""The load benchmark's report: figures per pass, comparisons, JSON + Markdown + PNG charts.

    .venv/bin/python bench/report.py [bench/results/load.json]   # rebuild report.md and the charts

Definitions (all per answered message, in ms):
- client first token: message frame sent -> first `delta` read by the load generator.
- server first token: `completed.metrics.first_token_ms` (the consumer received the frame ->
  the first delta handed to the socket).
- model first token: `completed.metrics.model_first_token_ms`, the model's own time to its first
  token (the simulated backend reports it; the HTTP fakes' own record is compared by distribution).
- service overhead: server (or client) first token minus the model's first token, per message:
  everything the service adds before the customer sees the first word. `overhead_ms` is the part
  before the model is called (the orchestrator's own work).
- relay gap: the client's mean time between two deltas minus the model's decode interval.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, percentile  # noqa: E402

PREDICTABLE_KINDS = {"predictable"}
OVERHEAD_TARGET_MS = 10.0
RATIO_TARGET = 1.05


def pcts(values: Iterable[float | None], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | int | None]:
    clean = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    out: dict[str, float | int | None] = {"n": len(clean)}
    for q in qs:
        out[f"p{q}"] = round(percentile(clean, q), 2) if clean else None
    out["mean"] = round(sum(clean) / len(clean), 2) if clean else None
    return out


def _turns(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [turn for conversation in data["conversations"] for turn in conversation["turns"]]


def pass_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The figures of one pass (`PassResult.to_json()`)."""
    turns = _turns(data)
    answered = [t for t in turns if t.get("metrics") is not None and t.get("total_ms") is not None]
    errors: dict[str, int] = {}
    for t in turns:
        if t.get("error"):
            errors[t["error"]] = errors.get(t["error"], 0) + 1
    socket_errors = [c["error"] for c in data["conversations"] if c.get("error")]
    metrics = [t["metrics"] for t in answered]
    modelled = [t for t in answered if t["metrics"].get("model_first_token_ms") is not None
                and t["metrics"].get("first_token_ms") is not None and t.get("first_token_ms") is not None]
    speculative = [t for t in answered if t["metrics"].get("speculative")]
    hits = [m.get("prefetch_hit") for m in metrics if m.get("prefetch_hit") is not None]
    decode_ms = data.get("decode_ms")
    gaps = [t["stream_ms"] / (t["deltas"] - 1) for t in answered if t.get("stream_ms") and t.get("deltas", 0) > 1]
    output_tokens = sum((m.get("output_tokens") or 0) for m in metrics)
    seconds = data.get("seconds") or float("nan")
    followups = [t for t in answered if t.get("turn", 0) > 0]
    summary: dict[str, Any] = {
        "label": data["label"], "mode": data["mode"], "profile": data["profile"], "pipeline": data["pipeline"],
        "users": data["users"], "speculation": data.get("speculation", True), "seconds": round(seconds, 1),
        "conversations": len(data["conversations"]),
        "conversations_finished": sum(1 for c in data["conversations"] if c.get("finished")),
        "messages": len(turns), "answered": len(answered), "errors": errors, "socket_errors": len(socket_errors),
        "socket_error_examples": socket_errors[:3],
        "client_first_token_ms": pcts(t["first_token_ms"] for t in answered),
        "server_first_token_ms": pcts(m.get("first_token_ms") for m in metrics),
        "client_total_ms": pcts(t["total_ms"] for t in answered),
        "server_total_ms": pcts(m.get("total_ms") for m in metrics),
        "ack_ms": pcts(t.get("ack_ms") for t in answered),
        "model_first_token_ms": pcts(t["metrics"]["model_first_token_ms"] for t in modelled),
        "service_overhead_server_ms": pcts(t["metrics"]["first_token_ms"] - t["metrics"]["model_first_token_ms"]
                                           for t in modelled),
        "service_overhead_client_ms": pcts(t["first_token_ms"] - t["metrics"]["model_first_token_ms"]
                                           for t in modelled),
        "orchestrator_overhead_ms": pcts(m.get("overhead_ms") for m in metrics if not m.get("speculative")),
        "client_to_model_first_token_ratio": pcts(t["first_token_ms"] / t["metrics"]["model_first_token_ms"]
                                                  for t in modelled if t["metrics"]["model_first_token_ms"] > 0),
        "client_to_model_ratio_of_p95": _ratio(pcts(t["first_token_ms"] for t in modelled).get("p95"),
                                               pcts(t["metrics"]["model_first_token_ms"] for t in modelled).get("p95")),
        "delta_gap_ms": pcts(gaps),
        "relay_added_gap_ms": (pcts(g - decode_ms for g in gaps) if decode_ms is not None else None),
        "max_gap_ms": pcts(t.get("max_gap_ms") for t in answered),
        "prompt_tokens": pcts((m.get("prompt_tokens") for m in metrics if not m.get("speculative")), (50, 80, 95)),
        "raw_prompt_tokens": pcts((m.get("raw_prompt_tokens") for m in metrics if not m.get("speculative")),
                                  (50, 80, 95)),
        "compression_ratio": pcts((m.get("compression_ratio") for m in metrics if not m.get("speculative")), (50, 95)),
        "assembly_ms": pcts((m.get("assembly_ms") for m in metrics), (50, 95, 99)),
        "degraded_answers": sum(1 for m in metrics if m.get("degraded")),
        "prefetch_hit_rate": round(sum(1 for h in hits if h) / len(hits), 3) if hits else None,
        "prefetch_lookups": len(hits),
        "speculative_served": len(speculative),
        "followup_first_token_ms": pcts(t["first_token_ms"] for t in followups),
        "predictable_followup_first_token_ms": pcts(t["first_token_ms"] for t in followups
                                                    if t.get("kind") in PREDICTABLE_KINDS),
        "throughput": {
            "conversations_per_second": round(sum(1 for c in data["conversations"] if c.get("finished")) / seconds, 3),
            "answers_per_second": round(len(answered) / seconds, 2),
            "output_tokens_per_second": round(output_tokens / seconds, 1),
            "deltas_per_second": round(sum(t.get("deltas", 0) for t in answered) / seconds, 1),
        },
        "usage": data.get("usage", []),
        "notes": data.get("notes", []),
    }
    # Where the first token's wait goes, per message (ms): context assembly; the rest of the pre-model work
    # (the consumer's part, compression and routing); what the model call and the relay add to the model's
    # own time (the first delta waits there for the message's commit, which runs beside the model call);
    # the socket to the client. `ack` as the client saw it is shown beside (under load the ack frame waits
    # in the same queue as everything else).
    split = [t for t in modelled if t.get("ack_ms") is not None and t["metrics"].get("assembly_ms") is not None
             and t["metrics"].get("overhead_ms") is not None]
    summary["overhead_breakdown_ms"] = {
        "ack seen by the client": pcts(t["ack_ms"] for t in split),
        "context assembly": pcts(t["metrics"]["assembly_ms"] for t in split),
        "pre-model work outside assembly (compression, routing)": pcts(
            t["metrics"]["overhead_ms"] - t["metrics"]["assembly_ms"] for t in split),
        "of which: compression": pcts(t["metrics"].get("compression_ms") for t in split),
        "model call + relay beyond the model's own first token": pcts(
            t["metrics"]["first_token_ms"] - t["metrics"]["overhead_ms"] - t["metrics"]["model_first_token_ms"]
            for t in split),
        "of which: the first delta waiting for the message's commit": pcts(
            t["metrics"].get("commit_wait_ms") for t in split),
        "socket to the client": pcts(t["first_token_ms"] - t["metrics"]["first_token_ms"] for t in split),
    }
    calls = data.get("upstream_calls") or []
    if calls:
        # The HTTP fake's own record of its first chunk: compared by distribution (calls are not matched to turns).
        upstream = pcts(c["first_chunk_ms"] for c in calls if c.get("first_chunk_ms") is not None)
        summary["upstream_first_chunk_ms"] = upstream
        server = summary["server_first_token_ms"]
        summary["service_overhead_by_distribution_ms"] = {
            q: round(server[q] - upstream[q], 2) if server.get(q) is not None and upstream.get(q) is not None else None
            for q in ("p50", "p95")}
        summary["upstream_calls"] = len(calls)
    return summary


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def comparisons(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Optimized / naive for the same mode, profile and load; overhead growth; speculation on / off."""
    by_key = {(s["mode"], s["profile"], s["users"], s["pipeline"], s["speculation"]): s for s in summaries}
    ratios = []
    for (mode, profile, users, pipeline, speculation), optimized in by_key.items():
        naive = by_key.get((mode, profile, users, "naive", True)) or by_key.get((mode, profile, users, "naive", False))
        if pipeline != "optimized" or not speculation or naive is None:
            continue
        row = {"mode": mode, "profile": profile, "users": users}
        for name, field, q in (("client_first_token_p50", "client_first_token_ms", "p50"),
                               ("client_first_token_p95", "client_first_token_ms", "p95"),
                               ("server_first_token_p95", "server_first_token_ms", "p95"),
                               ("client_total_p95", "client_total_ms", "p95"),
                               ("prompt_tokens_p50", "prompt_tokens", "p50"),
                               ("service_overhead_server_p95", "service_overhead_server_ms", "p95")):
            row[name] = _ratio(optimized[field].get(q), naive[field].get(q))
        ratios.append(row)
    growth = []
    for s in sorted(summaries, key=lambda s: (s["mode"], s["profile"], s["pipeline"], s["users"])):
        if s["service_overhead_server_ms"]["n"] and s["speculation"]:
            growth.append({"mode": s["mode"], "profile": s["profile"], "pipeline": s["pipeline"], "users": s["users"],
                           "server_p50": s["service_overhead_server_ms"]["p50"],
                           "server_p95": s["service_overhead_server_ms"]["p95"],
                           "client_p95": s["service_overhead_client_ms"]["p95"],
                           "orchestrator_p95": s["orchestrator_overhead_ms"]["p95"]})
    speculation = []
    for (mode, profile, users, pipeline, spec), on in by_key.items():
        off = by_key.get((mode, profile, users, pipeline, False))
        if not spec or off is None:
            continue
        speculation.append({
            "mode": mode, "profile": profile, "users": users, "pipeline": pipeline,
            "predictable_p50_off": off["predictable_followup_first_token_ms"]["p50"],
            "predictable_p50_on": on["predictable_followup_first_token_ms"]["p50"],
            "predictable_p95_off": off["predictable_followup_first_token_ms"]["p95"],
            "predictable_p95_on": on["predictable_followup_first_token_ms"]["p95"],
            "predictable_change_p50": _change(on["predictable_followup_first_token_ms"]["p50"],
                                              off["predictable_followup_first_token_ms"]["p50"]),
            "followups_p50_off": off["followup_first_token_ms"]["p50"],
            "followups_p50_on": on["followup_first_token_ms"]["p50"],
            "followups_change_p50": _change(on["followup_first_token_ms"]["p50"], off["followup_first_token_ms"]["p50"]),
            "served": on["speculative_served"], "hit_rate_on": on["prefetch_hit_rate"],
            "hit_rate_off": off["prefetch_hit_rate"]})
    return {"optimized_vs_naive": ratios, "overhead_growth": growth, "speculation": speculation}


def _change(on: float | None, off: float | None) -> float | None:
    return round(on / off - 1, 3) if on is not None and off else None


def acceptance(summaries: list[dict[str, Any]], comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's acceptance figures, each with the pass it comes from and whether it holds."""
    checks = []
    for s in summaries:
        if s["pipeline"] != "optimized" or s["users"] != 100 or not s["service_overhead_server_ms"]["n"]:
            continue
        for field, label in (("service_overhead_server_ms", "service overhead p95 (server side)"),
                             ("service_overhead_client_ms", "service overhead p95 (client side)")):
            value = s[field]["p95"]
            checks.append({"check": f"{label} <= {OVERHEAD_TARGET_MS:.0f} ms at 100 conversations", "pass": s["label"],
                           "value": value, "holds": value is not None and value <= OVERHEAD_TARGET_MS})
        ratio = s["client_to_model_first_token_ratio"]["p95"]
        checks.append({"check": f"client / model first token, p95 of the per-message ratio <= {RATIO_TARGET}",
                       "pass": s["label"], "value": ratio, "holds": ratio is not None and ratio <= RATIO_TARGET})
        ratio_of_p95 = s["client_to_model_ratio_of_p95"]
        checks.append({"check": f"client first token p95 / model first token p95 <= {RATIO_TARGET}", "pass": s["label"],
                       "value": ratio_of_p95, "holds": ratio_of_p95 is not None and ratio_of_p95 <= RATIO_TARGET})
    return checks


# --- Markdown -------------------------------------------------------------------------------

def _f(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _trio(p: dict[str, Any], digits: int = 0) -> str:
    return " / ".join(_f(p.get(q), digits) for q in ("p50", "p95", "p99"))


def markdown(run: dict[str, Any]) -> str:
    summaries = run["summaries"]
    comparison = run["comparisons"]
    machine = run["machine"]
    lines = [
        f"# Latency benchmark — {machine['date']}",
        "",
        f"Machine: {machine['cpus']} cores ({machine['processor']}), {machine['memory_gib']} GiB, "
        f"{machine['system']}, Python {machine['python']}; load average at start {machine['load_average_at_start']} "
        "(other work was running on the same machine)." if machine.get("load_average_at_start", 0) > 0.5 else
        f"Machine: {machine['cpus']} cores ({machine['processor']}), {machine['memory_gib']} GiB, "
        f"{machine['system']}, Python {machine['python']}.",
        f"Command: `{run['command']}`; think time {run['settings']['think']} s, first message typed "
        f"{run['settings'].get('typing', 0)} s after the socket opens, pass length "
        f"{run['settings']['duration']} s, at most {run['settings']['rounds']} conversations per customer.",
        "",
        "## First token and overhead (ms; p50 / p95 / p99)",
        "",
        "| pass | answered | errors | client first token | server first token | model first token "
        "| service overhead (server) | service overhead (client) | orchestrator pre-model | client/model ratio | total (client) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        errors = sum(s["errors"].values()) + s["socket_errors"]
        lines.append(
            f"| {s['label']} | {s['answered']} | {errors} | {_trio(s['client_first_token_ms'])} "
            f"| {_trio(s['server_first_token_ms'])} | {_trio(s['model_first_token_ms'])} "
            f"| {_trio(s['service_overhead_server_ms'], 1)} | {_trio(s['service_overhead_client_ms'], 1)} "
            f"| {_trio(s['orchestrator_overhead_ms'], 1)} | {_trio(s['client_to_model_first_token_ratio'], 3)} "
            f"| {_trio(s['client_total_ms'])} |")
    lines += ["", "## Prompt, assembly, prefetch, relay, throughput", "",
              "| pass | prompt tokens p50/p80/p95 | raw p50 | compression p50 | assembly p50/p95 ms | prefetch hits "
              "| speculative served | delta gap p50/p95 ms (relay added p50/p95) | answers/s | conversations/s | tokens/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        prompt = s["prompt_tokens"]
        added = s["relay_added_gap_ms"] or {}
        hit = f"{s['prefetch_hit_rate']:.0%} of {s['prefetch_lookups']}" if s["prefetch_hit_rate"] is not None else "–"
        lines.append(
            f"| {s['label']} | {_f(prompt['p50'])} / {_f(prompt['p80'])} / {_f(prompt['p95'])} "
            f"| {_f(s['raw_prompt_tokens']['p50'])} | {_f(s['compression_ratio']['p50'], 2)} "
            f"| {_f(s['assembly_ms']['p50'], 1)} / {_f(s['assembly_ms']['p95'], 1)} | {hit} | {s['speculative_served']} "
            f"| {_f(s['delta_gap_ms']['p50'], 2)} / {_f(s['delta_gap_ms']['p95'], 2)} "
            f"({_f(added.get('p50'), 2)} / {_f(added.get('p95'), 2)}) "
            f"| {_f(s['throughput']['answers_per_second'], 1)} | {_f(s['throughput']['conversations_per_second'], 2)} "
            f"| {_f(s['throughput']['output_tokens_per_second'])} |")
    broken_down = [s for s in summaries if s.get("overhead_breakdown_ms")
                   and next(iter(s["overhead_breakdown_ms"].values()))["n"]]
    if broken_down:
        columns = list(broken_down[0]["overhead_breakdown_ms"])
        lines += ["", "## Where the service overhead goes (ms per message, p50 / p95 / p99)", "",
                  "| pass | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for s in broken_down:
            parts = s["overhead_breakdown_ms"]
            lines.append(f"| {s['label']} | " + " | ".join(_trio(parts.get(c) or {}, 1) for c in columns) + " |")
    distribution = [s for s in summaries if s.get("upstream_first_chunk_ms")]
    if distribution:
        lines += ["", "HTTP model fakes (their calls are not matched to messages; compared by distribution):", "",
                  "| pass | upstream first chunk p50/p95/p99 | server first token p50/p95/p99 | overhead p50 / p95 |",
                  "|---|---|---|---|"]
        for s in distribution:
            over = s["service_overhead_by_distribution_ms"]
            lines.append(f"| {s['label']} | {_trio(s['upstream_first_chunk_ms'])} | {_trio(s['server_first_token_ms'])} "
                         f"| {_f(over['p50'], 1)} / {_f(over['p95'], 1)} |")
    if comparison["optimized_vs_naive"]:
        lines += ["", "## Optimized / naive (same conversations, same model profile)", "",
                  "| mode | profile | users | client first token p50 | client first token p95 | server first token p95 "
                  "| total p95 | prompt tokens p50 | service overhead p95 |", "|---|---|---|---|---|---|---|---|---|"]
        for r in comparison["optimized_vs_naive"]:
            lines.append(f"| {r['mode']} | {r['profile']} | {r['users']} | {_f(r['client_first_token_p50'], 2)} "
                         f"| {_f(r['client_first_token_p95'], 2)} | {_f(r['server_first_token_p95'], 2)} "
                         f"| {_f(r['client_total_p95'], 2)} | {_f(r['prompt_tokens_p50'], 2)} "
                         f"| {_f(r['service_overhead_server_p95'], 2)} |")
    if comparison["overhead_growth"]:
        lines += ["", "## Service overhead as load grows (ms)", "",
                  "| mode | profile | pipeline | users | server p50 | server p95 | client p95 | orchestrator pre-model p95 |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in comparison["overhead_growth"]:
            lines.append(f"| {g['mode']} | {g['profile']} | {g['pipeline']} | {g['users']} | {_f(g['server_p50'], 1)} "
                         f"| {_f(g['server_p95'], 1)} | {_f(g['client_p95'], 1)} | {_f(g['orchestrator_p95'], 1)} |")
    if comparison["speculation"]:
        lines += ["", "## Follow-ups with and without speculation (client first token, ms)", "",
                  "| mode | users | predictable p50 off → on | predictable p95 off → on | change p50 "
                  "| all follow-ups p50 off → on | served | prefetch hit rate off / on |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in comparison["speculation"]:
            lines.append(
                f"| {r['mode']} | {r['users']} | {_f(r['predictable_p50_off'])} → {_f(r['predictable_p50_on'])} "
                f"| {_f(r['predictable_p95_off'])} → {_f(r['predictable_p95_on'])} "
                f"| {_f((r['predictable_change_p50'] or 0) * 100, 0)} % "
                f"| {_f(r['followups_p50_off'])} → {_f(r['followups_p50_on'])} | {r['served']} "
                f"| {_f(r['hit_rate_off'], 2)} / {_f(r['hit_rate_on'], 2)} |")
    peer = run.get("peer")
    if peer:
        lines += ["", "## Relay overhead side by side (same upstream, same load)", ""]
        lines += peer_markdown(peer)
    lines += ["", "## CPU and memory per process (mean CPU % of one core, max RSS MiB)", "",
              "| pass | " + " | ".join(["process", "CPU mean %", "CPU max %", "RSS max MiB"]) + " |", "|---|---|---|---|---|"]
    for s in summaries:
        for u in s["usage"]:
            lines.append(f"| {s['label']} | {u['name']} | {_f(u['cpu_mean_percent'], 0)} | {_f(u['cpu_max_percent'], 0)} "
                         f"| {_f(u['rss_max_mb'], 0)} |")
    lines += ["", "## Acceptance", "", "| check | pass | value | holds |", "|---|---|---|---|"]
    for c in run["acceptance"]:
        lines.append(f"| {c['check']} | {c['pass']} | {_f(c['value'], 3)} | {'yes' if c['holds'] else 'NO'} |")
    if peer:
        for line in peer.get("verdicts", []):
            lines.append(f"| {line} | peer | | |")
    notes = [f"- {s['label']}: {note}" for s in summaries for note in s["notes"]]
    notes += [f"- pass not run: {failure}" for failure in run.get("failed_passes", [])]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "Charts: " + ", ".join(f"`{name}`" for name in run.get("charts", []))]
    return "\n".join(lines) + "\n"


def peer_markdown(peer: dict[str, Any]) -> list[str]:
    if peer.get("skipped"):
        return [f"Skipped: {peer['skipped']}"]
    lines = [f"Upstream: {peer['upstream']}.", "",
             "| path | users | answered | errors | client first token p50 / p95 / p99 | relay overhead vs direct p50 / p95 "
             "| delta gap p50 / p95 | CPU of the relay (mean % of a core) |", "|---|---|---|---|---|---|---|---|"]
    for row in peer["rows"]:
        lines.append(f"| {row['path']} | {row['users']} | {row['answered']} | {row['errors']} "
                     f"| {_trio(row['first_token_ms'])} | {_f(row['overhead_vs_direct_p50'], 1)} / "
                     f"{_f(row['overhead_vs_direct_p95'], 1)} | {_f(row['gap_ms']['p50'], 2)} / {_f(row['gap_ms']['p95'], 2)} "
                     f"| {_f(row.get('relay_cpu_percent'), 0)} |")
    if peer.get("mangaassist_note"):
        lines += ["", peer["mangaassist_note"]]
    return lines


# --- charts ---------------------------------------------------------------------------------

def _save(fig: Any, path: Path) -> str:
    """Write one chart and free it; its file name, for the report."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def charts(run: dict[str, Any], out: Path) -> list[str]:
    """PNG charts next to the report; their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    summaries = run["summaries"]
    if summaries:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(summaries) + 2), 4.5))
        width = 0.27
        xs = range(len(summaries))
        for offset, q in enumerate(("p50", "p95", "p99")):
            ax.bar([x + (offset - 1) * width for x in xs], [s["client_first_token_ms"].get(q) or 0 for s in summaries],
                   width, label=f"client {q}")
        model = [s["model_first_token_ms"].get("p95") for s in summaries]
        ax.scatter([x + width for x in xs], [m if m is not None else float("nan") for m in model], color="black",
                   marker="_", s=400, zorder=3, label="model's own p95")
        ax.set_xticks(list(xs), [s["label"] for s in summaries], rotation=35, ha="right", fontsize=8)
        ax.set_yscale("log")  # the local CPU model takes seconds; the others hundreds of ms
        ax.set_ylabel("first token (ms, log scale)")
        ax.set_title("First token seen by the client, per pass")
        ax.legend(fontsize=8)
        names.append(_save(fig, out / "first_token.png"))
    growth = run["comparisons"]["overhead_growth"]
    if growth:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        series: dict[str, list[dict[str, Any]]] = {}
        for g in growth:
            series.setdefault(f"{g['mode']} {g['profile']} {g['pipeline']}", []).append(g)
        for name, points in series.items():
            points.sort(key=lambda g: g["users"])
            ax.plot([g["users"] for g in points], [g["server_p95"] for g in points], marker="o", label=f"{name} p95")
            ax.plot([g["users"] for g in points], [g["server_p50"] for g in points], marker=".", linestyle="--",
                    label=f"{name} p50")
        ax.axhline(OVERHEAD_TARGET_MS, color="red", linewidth=0.8, label="target p95 10 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent conversations")
        ax.set_ylabel("service overhead before the first token (ms)")
        ax.set_title("Service overhead as load grows")
        ax.legend(fontsize=7)
        names.append(_save(fig, out / "overhead_growth.png"))
    peer = run.get("peer")
    if peer and peer.get("rows"):
        rows = peer["rows"]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        labels = [f"{r['path']}\n{r['users']} users" for r in rows]
        ax.bar([x - 0.2 for x in range(len(rows))], [r["first_token_ms"].get("p50") or 0 for r in rows], 0.4, label="p50")
        ax.bar([x + 0.2 for x in range(len(rows))], [r["first_token_ms"].get("p95") or 0 for r in rows], 0.4, label="p95")
        ax.axhline(peer["upstream_first_ms"], color="black", linewidth=0.8, label="upstream's own first chunk")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("client first token (ms)")
        ax.set_title("Same upstream: direct, through LiteLLM, through MangaAssist")
        ax.legend(fontsize=8)
        names.append(_save(fig, out / "peer.png"))
    if summaries:
        processes = sorted({u["name"] for s in summaries for u in s["usage"]})
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(summaries) + 2), 4.5))
        bottoms = [0.0] * len(summaries)
        for process in processes:
            values = [next((u["cpu_mean_percent"] for u in s["usage"] if u["name"] == process), 0.0) for s in summaries]
            ax.bar(range(len(summaries)), values, bottom=bottoms, label=process)
            bottoms = [b + v for b, v in zip(bottoms, values)]
        ax.axhline(100 * (run["machine"].get("cpus") or 2), color="red", linewidth=0.8, label="all cores")
        ax.set_xticks(range(len(summaries)), [s["label"] for s in summaries], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("mean CPU % (100 = one core)")
        ax.set_title("CPU per process during each pass")
        ax.legend(fontsize=7)
        names.append(_save(fig, out / "cpu.png"))
    return names


def build(run: dict[str, Any], out: Path = RESULTS, *, with_charts: bool = True) -> dict[str, Any]:
    """Summaries, comparisons, acceptance, charts and report.md from the passes in `run`; writes load.json."""
    out.mkdir(parents=True, exist_ok=True)
    run["summaries"] = [pass_summary(p) for p in run["passes"]]
    run["comparisons"] = comparisons(run["summaries"])
    run["acceptance"] = acceptance(run["summaries"], run["comparisons"])
    run["charts"] = charts(run, out) if with_charts else []
    (out / "report.md").write_text(markdown(run), encoding="utf-8")
    raw = {k: v for k, v in run.items() if k != "passes"}
    (out / "load.json").write_text(json.dumps(raw, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    (out / "load-turns.json").write_text(json.dumps(run["passes"], ensure_ascii=False, default=str), encoding="utf-8")
    return run


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "load.json"
    run = json.loads(source.read_text(encoding="utf-8"))
    if "passes" not in run:  # load.json keeps the per-message data beside it; load-partial.json has it inside
        run["passes"] = json.loads((source.parent / "load-turns.json").read_text(encoding="utf-8"))
    build(run, source.parent)
    print((source.parent / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
