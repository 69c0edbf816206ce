"""The alert rules that ship in ops/prometheus: valid, unit-tested with promtool, in step with DESIGN.md §6."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from chat import metrics
from chat.selectors_dashboard import ALARMS, ALARMS_BY_SIGNAL

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "ops" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts_test.yml"
# The design lives in shared/, beside the repository; docs/DESIGN.md is the copy the project keeps.
_SHARED_DESIGN = ROOT.parent / "shared" / "DESIGN.md"
DESIGN = Path(os.environ.get("MANGAASSIST_DESIGN_MD", _SHARED_DESIGN if _SHARED_DESIGN.exists() else
                             ROOT / "docs" / "DESIGN.md"))


def promtool() -> str:
    """The promtool binary; a missing one skips locally and fails in CI, where it must be installed."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian: apt-get install -y prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule of alerts.yml by alert name."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


class PromtoolTests:
    def test_rules_pass_promtool_check(self) -> None:
        result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(ALARMS)} rules found" in result.stdout

    def test_rule_unit_tests_pass(self) -> None:
        """alerts_test.yml: every alert fires past its alarm and stays quiet below it (see the file)."""
        result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


class AlarmTableTests:
    """alerts.yml, the dashboard's alarm states (chat.selectors_dashboard.ALARMS) and DESIGN.md §6 agree."""

    def test_every_alarm_has_its_rule_with_threshold_severity_and_operator_action(self) -> None:
        found = rules()
        assert set(found) == {alarm.alert for alarm in ALARMS}
        for alarm in ALARMS:
            rule = found[alarm.alert]
            expr = " ".join(rule["expr"].split())
            threshold = alarm.threshold / alarm.prometheus_scale
            comparison = f"{'>' if alarm.above else '<'} {threshold:g}"
            assert re.search(re.escape(comparison) + r"(?![\d.])", expr), (alarm.alert, comparison, expr)
            assert rule["labels"]["signal"] == alarm.signal
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["annotations"]["action"] == alarm.action
            assert rule["annotations"]["summary"]
            assert rule["for"] == "5m"  # the table's "for 5 min"; the dashboard reads the same 5 minutes

    def test_every_row_of_the_design_table_is_an_alarm_with_its_threshold_and_action(self) -> None:
        """DESIGN.md §6's table itself, read row by row: a changed threshold there fails here."""
        section = DESIGN.read_text().split("## 6.", 1)[1].split("\n## ", 1)[0]
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                for line in section.splitlines() if line.startswith("|")][2:]  # past the header and its rule
        assert {signal.replace(" ", "_") for signal, *_ in rows} == {alarm.signal for alarm in ALARMS}
        found = rules()
        scale = {"ms": 1.0, "s": 1000.0, "%": 0.01, "": 1.0}
        for signal, target, alarm_text, action in rows:
            alarm = ALARMS_BY_SIGNAL[signal.replace(" ", "_")]
            comparison = re.search(r"([<>])\s*([\d.,]+)\s*(ms|s|%)?", alarm_text)
            assert comparison, alarm_text
            operator, number, unit = comparison.groups()
            assert (operator == ">") == alarm.above, signal
            assert float(number.replace(",", "")) * scale[unit or ""] == pytest.approx(alarm.threshold), signal
            assert alarm.target == target, signal
            rule = found[alarm.alert]
            if alarm_text.startswith("p95"):
                assert "histogram_quantile(0.95," in " ".join(rule["expr"].split()), signal
            if "for 5 min" in alarm_text:
                assert rule["for"] == "5m", signal
            words = {word for word in re.findall(r"[a-z]+", action.lower()) if len(word) > 3}
            assert words <= set(re.findall(r"[a-z]+", rule["annotations"]["action"].lower())), (signal, action)

    def test_rules_read_metrics_that_the_code_exports(self) -> None:
        exported = {value._name for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)}
        for name, rule in rules().items():
            used = set(re.findall(r"\bmangaassist_[a-z_]+", rule["expr"]))
            assert used, name
            for series in used:
                base = re.sub(r"_(bucket|sum|count|total)$", "", series)
                assert base in exported, f"{name} reads {series}, which chat/metrics.py does not export"

    def test_rule_tests_cover_firing_and_quiet_for_every_alert(self) -> None:
        fired: set[str] = set()
        quiet: set[str] = set()
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
        assert fired == set(rules()) and quiet == set(rules())
