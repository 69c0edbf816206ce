"""Fixtures for provisioned throughput: the fake control plane under real boto3, and Tokyo time.

Time is moved by the test: services take `now=`, and `at()` pins `django.utils.timezone.now`
for the code that reads the clock itself (provisioned_route, the tasks, the admin).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from tests.fakes.bedrock_control import FakeBedrockControl

JST = ZoneInfo("Asia/Tokyo")
DAY = date(2025, 6, 2)  # a Monday
PREFIX = "mangaassist-"


def jst(hour: int, minute: int = 0, *, day: int = 0) -> datetime:
    """`hour:minute` in Tokyo on DAY (+ `day` days)."""
    return datetime.combine(DAY + timedelta(days=day), time(hour, minute), tzinfo=JST)


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`at(moment)` makes `timezone.now()` answer `moment` from then on."""

    def move(moment: datetime) -> datetime:
        monkeypatch.setattr(timezone, "now", lambda: moment)
        return moment

    return move


@pytest.fixture
def control(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBedrockControl]:  # type: ignore[no-untyped-def]
    """Provisioned throughput switched on, talking to a fresh fake control plane with dummy credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    with FakeBedrockControl() as fake:
        settings.BEDROCK_CONTROL_ENDPOINT_URL = fake.url
        settings.PROVISIONED_THROUGHPUT_ENABLED = True
        settings.PROVISIONED_NAME_PREFIX = PREFIX
        settings.PROVISIONED_MODEL_ID = "anthropic.claude-3-5-sonnet-20241022-v2:0"
        settings.PROVISIONED_MODEL_UNITS = 2
        settings.PROVISIONED_COMMITMENT = ""
        settings.PROVISIONED_HOURLY_PRICE_USD = 40.0
        settings.PEAK_START_HOUR, settings.PEAK_END_HOUR = 9, 23
        settings.PROVISIONED_DRAIN_SECONDS = 0
        # Each routing question reads the database: the test moves time between two of them.
        settings.PROVISIONED_ROUTE_CACHE_SECONDS = 0
        yield fake


@pytest.fixture
def beat_schedule(settings) -> None:  # type: ignore[no-untyped-def]
    """The beat schedule from the settings' hours, as `migrate` installs it (needs a django_db mark)."""
    from throughput.schedule import schedule_install

    schedule_install(overwrite_timing=True)


def history() -> list[tuple[str, str]]:
    """(action, result) of every recorded action, oldest first."""
    from throughput.models import ThroughputAction

    return list(ThroughputAction.objects.order_by("created_at", "id").values_list("action", "result"))


def record_answers(*, at: datetime, first_token_ms: list[float], speculative: bool = False) -> None:
    """Answers as the orchestrator records them (chat.TurnRecord), dated `at`."""
    from chat.models import TurnRecord, TurnStatus

    marker = f"t{at.timestamp():.0f}-{len(first_token_ms)}-{int(speculative)}"
    TurnRecord.objects.bulk_create([
        TurnRecord(client_message_id=f"{marker}-{i}", status=TurnStatus.COMPLETE, first_token_ms=ms,
                   speculative=speculative, route="on_demand", intent="faq")
        for i, ms in enumerate(first_token_ms)
    ])
    TurnRecord.objects.filter(client_message_id__startswith=f"{marker}-").update(created_at=at)
