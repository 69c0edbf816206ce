"""Chat's beat tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import TurnRecord, TurnStatus
from chat.tasks import turn_records_prune_task

pytestmark = pytest.mark.django_db


class TurnRecordPruneTests:
    def test_records_past_the_retention_window_are_deleted_and_recent_ones_kept(self, settings) -> None:  # type: ignore[no-untyped-def]
        settings.TURN_RECORD_RETENTION_DAYS = 30
        now = timezone.now()
        for days in (1, 29, 31, 90):
            record = TurnRecord.objects.create(client_message_id=f"d{days}", status=TurnStatus.COMPLETE)
            TurnRecord.objects.filter(id=record.id).update(created_at=now - timedelta(days=days))
        assert turn_records_prune_task.apply().get() == 2
        assert sorted(TurnRecord.objects.values_list("client_message_id", flat=True)) == ["d1", "d29"]
        assert turn_records_prune_task.apply().get() == 0  # safe to run twice

    def test_the_prune_is_installed_in_the_beat_schedule_in_tokyo_time(self) -> None:
        from django_celery_beat.models import PeriodicTask

        from throughput.schedule import PRUNE_RECORDS, schedule_install

        schedule_install()
        task = PeriodicTask.objects.get(name=PRUNE_RECORDS)
        assert task.task == "chat.turn_records_prune"
        assert (task.crontab.hour, task.crontab.minute, str(task.crontab.timezone)) == ("3", "30", "Asia/Tokyo")
