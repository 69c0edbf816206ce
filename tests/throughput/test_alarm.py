"""The latency alarm: first-token p95 from chat.TurnRecord (every process's answers) buys capacity off-peak,
within a daily cap."""

from __future__ import annotations

from typing import Any

import pytest

from chat.llm.base import Route
from tests.fakes.bedrock_control import FakeBedrockControl
from tests.throughput.conftest import history, jst, record_answers
from throughput import selectors, services
from throughput.models import Action, CapacityWindow, ProvisionedThroughput, Result, ThroughputAction, WindowKind

pytestmark = pytest.mark.django_db

CREATE = "CreateProvisionedModelThroughput"
SLOW = [800.0] * 19 + [300.0]  # p95 (nearest rank, 20 answers) = the 19th fastest = 800 ms


@pytest.fixture
def alarm(control: FakeBedrockControl, beat_schedule: None, settings) -> FakeBedrockControl:  # type: ignore[no-untyped-def]
    settings.PROVISIONED_ALARM_P95_MS = 500
    settings.PROVISIONED_ALARM_LOOKBACK_MINUTES = 5
    settings.PROVISIONED_ALARM_MIN_SAMPLES = 20
    settings.PROVISIONED_ALARM_HOLD_MINUTES = 60
    settings.PROVISIONED_ALARM_MAX_HOURS_PER_DAY = 1.5
    return control


class AlarmTests:
    def test_slow_first_tokens_off_peak_buy_capacity_for_an_hour(self, alarm: FakeBedrockControl, at: Any) -> None:
        record_answers(at=jst(2, 58), first_token_ms=SLOW)
        outcome = services.alarm_check(now=jst(3))
        assert outcome.fired and outcome.sample.p95_ms == 800 and outcome.sample.samples == 20
        [model] = alarm.models()
        assert ProvisionedThroughput.objects.get().trigger == "alarm"
        window = CapacityWindow.objects.get(kind=WindowKind.ALARM)
        assert (window.starts_at, window.ends_at) == (jst(3), jst(4))
        at(jst(3, 1))
        assert selectors.provisioned_route() is None  # Creating: still on-demand

        alarm.set_status(model.arn, "InService")
        services.throughput_refresh(now=jst(3, 15), actor="beat")
        at(jst(3, 20))
        assert selectors.provisioned_route() == Route("provisioned", model.arn)
        services.throughput_reconcile(now=jst(3, 30), actor="reconcile")
        assert len(alarm.models()) == 1
        services.throughput_reconcile(now=jst(4), actor="reconcile")
        assert alarm.models() == []
        assert (Action.ALARM, Result.OK) in history()

    def test_it_is_the_p95_not_the_mean(self, alarm: FakeBedrockControl) -> None:
        record_answers(at=jst(2, 58), first_token_ms=[200.0] * 19 + [5000.0])  # mean 440, p95 200
        assert not services.alarm_check(now=jst(3)).fired
        record_answers(at=jst(2, 59), first_token_ms=[200.0] * 17 + [900.0] * 3)  # 40 answers, p95 = 900
        assert services.alarm_check(now=jst(3)).fired

    @pytest.mark.parametrize("answers", ["fast", "too_few", "too_old", "pre_generated"])
    def test_no_alarm(self, alarm: FakeBedrockControl, answers: str) -> None:
        if answers == "fast":
            record_answers(at=jst(2, 58), first_token_ms=[450.0] * 40)
        elif answers == "too_few":
            record_answers(at=jst(2, 58), first_token_ms=[900.0] * 19)
        elif answers == "too_old":
            record_answers(at=jst(2, 54), first_token_ms=[900.0] * 40)  # outside the last 5 minutes
        else:
            record_answers(at=jst(2, 58), first_token_ms=[900.0] * 40, speculative=True)
        assert not services.alarm_check(now=jst(3)).fired
        assert alarm.requests_for(CREATE) == [] and not CapacityWindow.objects.exists()

    def test_the_daily_cap_limits_what_the_alarm_buys(self, alarm: FakeBedrockControl) -> None:
        record_answers(at=jst(3), first_token_ms=SLOW)
        services.alarm_check(now=jst(3))  # 03:00-04:00: one hour of the 1.5
        services.throughput_reconcile(now=jst(4), actor="reconcile")
        assert alarm.models() == []

        record_answers(at=jst(5), first_token_ms=SLOW)
        services.alarm_check(now=jst(5))  # only half an hour is left
        assert CapacityWindow.objects.get(starts_at=jst(5)).ends_at == jst(5, 30)
        services.throughput_reconcile(now=jst(5, 30), actor="reconcile")
        assert alarm.models() == []

        record_answers(at=jst(6), first_token_ms=SLOW)
        assert services.alarm_check(now=jst(6)).detail == "daily alarm budget spent"
        record_answers(at=jst(6, 1), first_token_ms=SLOW)
        services.alarm_check(now=jst(6, 1))
        assert len(alarm.requests_for(CREATE)) == 2 and alarm.models() == []
        assert ThroughputAction.objects.filter(action=Action.ALARM_CAPPED).count() == 1  # said once

        # A new Tokyo day, a new budget.
        record_answers(at=jst(3, day=1), first_token_ms=SLOW)
        services.alarm_check(now=jst(3, day=1))
        assert len(alarm.requests_for(CREATE)) == 3
        assert selectors.alarm_seconds_granted(now=jst(3, day=1)) == 3600

    def test_a_lasting_alarm_extends_its_window_within_the_cap(self, alarm: FakeBedrockControl, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_ALARM_MAX_HOURS_PER_DAY = 2
        record_answers(at=jst(3), first_token_ms=SLOW)
        services.alarm_check(now=jst(3))
        record_answers(at=jst(3, 20), first_token_ms=SLOW)
        services.alarm_check(now=jst(3, 20))  # more than half the window left: unchanged
        assert CapacityWindow.objects.get().ends_at == jst(4)
        record_answers(at=jst(3, 31), first_token_ms=SLOW)
        services.alarm_check(now=jst(3, 31))
        assert CapacityWindow.objects.get().ends_at == jst(4, 31)
        assert len(alarm.requests_for(CREATE)) == 1  # the same model, kept longer

    def test_in_peak_hours_the_alarm_only_makes_sure_capacity_is_coming(self, alarm: FakeBedrockControl) -> None:
        alarm.fail_next(CREATE, status=400, code="ServiceQuotaExceededException")
        services.throughput_scale_up(now=jst(9), actor="beat")  # the morning's creation failed
        record_answers(at=jst(9, 5), first_token_ms=SLOW)
        services.alarm_check(now=jst(9, 5))
        assert len(alarm.requests_for(CREATE)) == 1  # not every minute: the failure is waited out first
        record_answers(at=jst(9, 31), first_token_ms=SLOW)
        services.alarm_check(now=jst(9, 31))
        assert len(alarm.models()) == 1 and ProvisionedThroughput.objects.filter(trigger="alarm").exists()
        assert not CapacityWindow.objects.exists()  # no budget spent in peak hours
        record_answers(at=jst(9, 32), first_token_ms=SLOW)
        services.alarm_check(now=jst(9, 32))
        assert len(alarm.requests_for(CREATE)) == 2  # nothing more bought

    def test_an_alarm_window_running_into_peak_hours_is_not_extended(self, alarm: FakeBedrockControl) -> None:
        record_answers(at=jst(8, 30), first_token_ms=SLOW)
        services.alarm_check(now=jst(8, 30))  # 08:30-09:30
        record_answers(at=jst(9, 5), first_token_ms=SLOW)
        services.alarm_check(now=jst(9, 5))  # peak hours want capacity anyway
        assert CapacityWindow.objects.get().ends_at == jst(9, 30)
        assert selectors.alarm_seconds_granted(now=jst(9, 5)) == 3600
        assert len(alarm.requests_for(CREATE)) == 1

    def test_an_operator_keeping_capacity_down_wins_over_the_alarm(self, alarm: FakeBedrockControl) -> None:
        services.throughput_keep_down(now=jst(2), actor="admin:ops")
        record_answers(at=jst(3), first_token_ms=SLOW)
        services.alarm_check(now=jst(3))
        record_answers(at=jst(3, 1), first_token_ms=SLOW)
        services.alarm_check(now=jst(3, 1))
        assert alarm.requests_for(CREATE) == []
        assert ThroughputAction.objects.filter(action=Action.ALARM, result=Result.SKIPPED).count() == 1
