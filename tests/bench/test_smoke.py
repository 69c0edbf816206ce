"""The latency benchmark itself, in seconds: embedded mode, the instant model, a few conversations.

The benchmark is not part of the suite (it takes minutes and measures the machine); this runs it
end to end at the smallest size, so the one command keeps working and its report keeps its fields.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [name for name in ("psutil", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"the benchmark's requirements are not installed ({', '.join(missing)}: pip install -r requirements-bench.txt)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI runs every test)")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench-results")
    command = [sys.executable, "-m", "bench.load", "--passes", "embedded:instant:3", "--duration", "6",
               "--think", "0.2", "--typing", "0.2", "--rounds", "1", "--ramp", "0.5", "--no-peer", "--no-progress", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


class BenchmarkSmokeTests:
    def test_report_files_are_written(self, report: Path) -> None:
        for name in ("report.md", "load.json", "load-turns.json", "first_token.png", "cpu.png"):
            assert (report / name).stat().st_size > 0, name
        assert (report / "first_token.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_both_pipelines_answer_every_message(self, report: Path) -> None:
        run = json.loads((report / "load.json").read_text())
        summaries = {s["pipeline"]: s for s in run["summaries"]}
        assert set(summaries) == {"naive", "optimized"}
        for summary in summaries.values():
            assert summary["answered"] >= 3, summary
            assert summary["answered"] == summary["messages"], summary
            assert not summary["errors"] and not summary["socket_errors"], summary

    def test_figures_are_sane(self, report: Path) -> None:
        run = json.loads((report / "load.json").read_text())
        assert run["machine"]["cpus"] >= 1 and run["machine"]["date"]
        for s in run["summaries"]:
            client, server = s["client_first_token_ms"], s["server_first_token_ms"]
            assert 0 < server["p50"] <= client["p50"] < 5000, s  # the client sees the first token after the server sent it
            assert client["p50"] <= client["p95"] <= client["p99"]
            assert s["client_total_ms"]["p50"] >= client["p50"]
            assert s["model_first_token_ms"]["p50"] == 0  # the instant profile: every ms is the service's own
            assert s["service_overhead_server_ms"]["n"] == s["answered"] - s["speculative_served"]
            assert 0 < s["prompt_tokens"]["p50"] <= s["raw_prompt_tokens"]["p50"]
            assert s["throughput"]["answers_per_second"] > 0
            assert {u["name"] for u in s["usage"]} >= {"load generator", "web (daphne)"}
        by_pipeline = {s["pipeline"]: s for s in run["summaries"]}
        assert by_pipeline["naive"]["compression_ratio"]["p50"] == 1.0  # naive: the prompt as it comes
        assert by_pipeline["optimized"]["prompt_tokens"]["p50"] < by_pipeline["naive"]["prompt_tokens"]["p50"]
        ratios = run["comparisons"]["optimized_vs_naive"]
        assert len(ratios) == 1 and ratios[0]["client_first_token_p95"] > 0

    def test_markdown_report_has_the_tables(self, report: Path) -> None:
        text = (report / "report.md").read_text()
        for heading in ("## First token and overhead", "## Optimized / naive", "## CPU and memory per process"):
            assert heading in text
