"""The beat schedule as django-celery-beat stores and reads it, and the peak hours it defines."""

from __future__ import annotations

import json
from datetime import datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import ModelEntry
from django_celery_beat.tzcrontab import TzAwareCrontab

from mangaassist.celery import app
from tests.fakes.bedrock_control import FakeBedrockControl
from tests.throughput.conftest import jst
from throughput import schedule, selectors, services
from throughput import tasks as throughput_tasks  # noqa: F401 - registers the tasks with the app

pytestmark = pytest.mark.django_db

NAMES = [schedule.SCALE_UP, schedule.SCALE_DOWN, schedule.RECONCILE, schedule.REFRESH, schedule.ALARM_CHECK]


def entries() -> dict[str, ModelEntry]:
    """The entries as the DatabaseScheduler builds them from its tables."""
    return {task.name: ModelEntry(task, app=app) for task in PeriodicTask.objects.filter(name__in=NAMES)}


class ScheduleTests:
    def test_migrate_installed_every_entry_as_a_tokyo_crontab(self) -> None:
        # No install call here: the test database was built by `migrate`, whose post_migrate installed them.
        installed = entries()
        assert sorted(installed) == sorted(NAMES)
        for name, entry in installed.items():
            assert isinstance(entry.schedule, TzAwareCrontab), name
            assert entry.schedule.tz == ZoneInfo("Asia/Tokyo"), name
            assert entry.task in app.tasks, name
            assert entry.kwargs == {"actor": f"beat:{name}"}
            assert entry.options["expires"] > 0
        up, down = installed[schedule.SCALE_UP].schedule, installed[schedule.SCALE_DOWN].schedule
        assert (up.hour, up.minute, down.hour, down.minute) == ({9}, {0}, {23}, {0})
        assert installed[schedule.RECONCILE].schedule.minute == set(range(0, 60, 5))

    def test_celery_runs_scale_up_at_nine_and_scale_down_at_eleven_tokyo_time(self) -> None:
        installed = entries()

        def next_run(name: str, after: datetime) -> datetime:
            start, delta, _ = installed[name].schedule.remaining_delta(after)
            return (start + delta).astimezone(dt_timezone.utc)

        # 09:00 JST is midnight UTC; 23:00 JST is 14:00 UTC.
        assert next_run(schedule.SCALE_UP, jst(8)) == datetime(2025, 6, 2, 0, 0, tzinfo=dt_timezone.utc)
        assert next_run(schedule.SCALE_DOWN, jst(12)) == datetime(2025, 6, 2, 14, 0, tzinfo=dt_timezone.utc)

    def test_install_again_changes_nothing_and_keeps_the_operators_timing(self) -> None:
        scale_up = PeriodicTask.objects.get(name=schedule.SCALE_UP)
        scale_up.crontab = CrontabSchedule.objects.create(minute="30", hour="8", timezone=ZoneInfo("Asia/Tokyo"))
        scale_up.description = "edited"
        scale_up.save()
        PeriodicTask.objects.filter(name=schedule.RECONCILE).update(enabled=False)

        schedule.schedule_install()
        assert PeriodicTask.objects.filter(name__in=NAMES).count() == 5
        scale_up = PeriodicTask.objects.select_related("crontab").get(name=schedule.SCALE_UP)
        assert (scale_up.crontab.hour, scale_up.crontab.minute) == ("8", "30")  # the operator's
        assert scale_up.description.startswith("Buy provisioned throughput")  # the code's
        assert json.loads(scale_up.kwargs) == {"actor": f"beat:{schedule.SCALE_UP}"}
        assert not PeriodicTask.objects.get(name=schedule.RECONCILE).enabled

        schedule.schedule_install(overwrite_timing=True)
        scale_up = PeriodicTask.objects.select_related("crontab").get(name=schedule.SCALE_UP)
        assert (scale_up.crontab.hour, scale_up.crontab.minute) == ("9", "0")
        assert PeriodicTask.objects.get(name=schedule.RECONCILE).enabled


class PeakHoursTests:
    @pytest.mark.parametrize(("moment", "peak"), [
        (jst(8, 59), False), (jst(9), True), (jst(15), True), (jst(22, 59), True), (jst(23), False), (jst(2), False),
    ])
    def test_peak_is_nine_to_eleven_tokyo_time(self, beat_schedule: None, moment: datetime, peak: bool) -> None:
        assert selectors.peak_state(now=moment).active is peak

    def test_moving_the_scale_up_in_the_admin_moves_the_peak(self, control: FakeBedrockControl,
                                                             beat_schedule: None) -> None:
        scale_up = PeriodicTask.objects.get(name=schedule.SCALE_UP)
        scale_up.crontab = CrontabSchedule.objects.create(minute="0", hour="8", timezone=ZoneInfo("Asia/Tokyo"))
        scale_up.save()
        assert selectors.peak_state(now=jst(8, 30)).active
        assert services.throughput_scale_up(now=jst(8), actor="beat").result == "ok"
        assert len(control.models()) == 1
        # Reconciliation agrees: the model bought at 08:00 is wanted, not a leak.
        services.throughput_reconcile(now=jst(8, 5), actor="reconcile")
        assert len(control.models()) == 1

    def test_a_disabled_scale_up_means_no_peak(self, beat_schedule: None) -> None:
        PeriodicTask.objects.filter(name=schedule.SCALE_UP).update(enabled=False)
        assert not selectors.peak_state(now=jst(12)).active

    def test_without_an_installed_schedule_the_settings_hours_rule(self, settings) -> None:  # type: ignore[no-untyped-def]
        PeriodicTask.objects.filter(name__in=[schedule.SCALE_UP, schedule.SCALE_DOWN]).delete()
        settings.PEAK_START_HOUR, settings.PEAK_END_HOUR = 20, 2  # a peak across midnight
        state = selectors.peak_state(now=jst(1))
        assert state.source == "settings" and state.active and state.next_end == jst(2)
        assert not selectors.peak_state(now=jst(3)).active
        assert selectors.peak_state(now=jst(20)).active

    def test_an_overnight_schedule_from_settings(self, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PEAK_START_HOUR, settings.PEAK_END_HOUR = 20, 2
        schedule.schedule_install(overwrite_timing=True)
        assert selectors.peak_state(now=jst(1)).active and selectors.peak_state(now=jst(1)).source == "schedule"
        assert not selectors.peak_state(now=jst(3)).active
        assert selectors.peak_state(now=jst(23, 30)).next_end == jst(2, day=1)
