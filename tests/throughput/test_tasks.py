"""The Celery tasks beat queues: each runs its service at the current time, and twice is harmless."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.bedrock_control import FakeBedrockControl
from tests.throughput.conftest import jst, record_answers
from throughput import tasks
from throughput.models import ProvisionedThroughput, ThroughputStatus

pytestmark = pytest.mark.django_db


class TaskTests:
    def test_a_day_of_beat_deliveries(self, control: FakeBedrockControl, beat_schedule: None, at: Any) -> None:
        at(jst(9))
        first = tasks.throughput_scale_up_task.apply(kwargs={"actor": "beat:up"}).get()
        second = tasks.throughput_scale_up_task.apply(kwargs={"actor": "beat:up"}).get()
        assert first.startswith("creating ") and "already creating" in second
        assert len(control.requests_for("CreateProvisionedModelThroughput")) == 1

        at(jst(9, 1))
        assert tasks.throughput_refresh_task.apply().get() == 0  # still Creating: nothing changed
        control.set_status(control.models()[0].arn, "InService")
        at(jst(9, 2))
        assert tasks.throughput_refresh_task.apply().get() == 1
        assert ProvisionedThroughput.objects.get().status == ThroughputStatus.IN_SERVICE

        at(jst(23))
        assert tasks.throughput_scale_down_task.apply(kwargs={"actor": "beat:down"}).get().endswith("deleted")
        at(jst(23, 5))
        assert tasks.throughput_reconcile_task.apply().get() == 0
        assert control.models() == []

    def test_the_alarm_task_reads_the_answers_of_the_last_minutes(self, control: FakeBedrockControl,
                                                                  beat_schedule: None, at: Any) -> None:
        at(jst(3))
        assert tasks.throughput_alarm_check_task.apply().get() is False
        record_answers(at=jst(2, 59), first_token_ms=[900.0] * 30)
        assert tasks.throughput_alarm_check_task.apply().get() is True
        assert len(control.models()) == 1

    def test_switched_off_the_tasks_never_call_aws(self, control: FakeBedrockControl, beat_schedule: None,
                                                   at: Any, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_THROUGHPUT_ENABLED = False
        at(jst(9))
        record_answers(at=jst(8, 59), first_token_ms=[900.0] * 30)
        for task in (tasks.throughput_scale_up_task, tasks.throughput_refresh_task, tasks.throughput_reconcile_task,
                     tasks.throughput_alarm_check_task, tasks.throughput_scale_down_task):
            task.apply().get()
        assert control.requests == [] and not ProvisionedThroughput.objects.exists()
