"""The admin: current state, schedule, history and cost on one page; scaling by hand after a confirmation."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from mangaassist.celery import in_process_wait
from tests.fakes.bedrock_control import FakeBedrockControl
from tests.throughput.conftest import jst
from throughput import schedule, services
from throughput.models import CapacityWindow, ProvisionedThroughput, ThroughputAction, WindowKind

CHANGELIST = "admin:throughput_provisionedthroughput_changelist"
SCALE_UP = "admin:throughput_scale_up"
SCALE_DOWN = "admin:throughput_scale_down"


def state_of(page: str) -> str:
    start = page.index('id="throughput-current-state"')
    return page[page.index("<strong>", start) + len("<strong>"):page.index("</strong>", start)]


@pytest.mark.django_db
class StatePageTests:
    def test_the_page_shows_the_state_the_schedule_the_history_and_the_cost(
            self, admin_client: Client, control: FakeBedrockControl, beat_schedule: None, at: Any) -> None:
        at(jst(10))
        page = admin_client.get(reverse(CHANGELIST)).content.decode()
        assert state_of(page) == "none"
        for entry in schedule.beat_entries():
            assert entry.name in page
        assert "Asia/Tokyo" in page and "Scale up now" in page and "Scale down now" in page

        services.throughput_scale_up(now=jst(9), actor="beat:throughput: scale up at peak start")
        page = admin_client.get(reverse(CHANGELIST)).content.decode()
        assert state_of(page) == "creating"
        assert "beat:throughput: scale up at peak start" in page  # who did it, in the history

        [model] = control.models()
        control.set_status(model.arn, "InService")
        services.throughput_refresh(now=jst(9, 10), actor="beat")
        page = admin_client.get(reverse(CHANGELIST)).content.decode()
        assert state_of(page) == "in service"
        assert model.arn in page[page.index('id="throughput-route"'):]
        # 1 h x 2 model units x $40 so far; 14 h by 23:00.
        cost = page[page.index('id="throughput-cost"'):]
        assert "$80.00 so far" in cost and "$1120.00 by the end of the day" in cost

    def test_nothing_is_editable_here(self, admin_client: Client, control: FakeBedrockControl,
                                      beat_schedule: None) -> None:
        services.throughput_scale_up(now=jst(9), actor="beat")
        row = ProvisionedThroughput.objects.get()
        assert admin_client.get(reverse("admin:throughput_provisionedthroughput_add")).status_code == 403
        change = admin_client.post(reverse("admin:throughput_provisionedthroughput_change", args=[row.pk]),
                                   {"status": "deleted"})
        assert change.status_code == 403
        assert ProvisionedThroughput.objects.get().status == row.status


@pytest.mark.django_db(transaction=True)
class ScaleByHandTests:
    def test_scale_up_asks_first_then_buys(self, admin_client: Client, control: FakeBedrockControl,
                                           beat_schedule: None, at: Any) -> None:
        at(jst(2))
        confirm = admin_client.get(reverse(SCALE_UP))
        assert confirm.status_code == 200
        assert "$80.00 per hour" in confirm.content.decode() and control.requests == []  # asking buys nothing

        response = admin_client.post(reverse(SCALE_UP), {"hours": "2", "confirm": "yes"})
        assert response.status_code == 302
        in_process_wait()
        assert len(control.models()) == 1
        window = CapacityWindow.objects.get()
        assert (window.kind, window.starts_at, window.ends_at) == (WindowKind.MANUAL_ON, jst(2), jst(4))
        assert ProvisionedThroughput.objects.get().requested_by == "admin:admin"
        assert ThroughputAction.objects.filter(actor="admin:admin").exists()

    def test_scale_down_asks_first_then_deletes(self, admin_client: Client, control: FakeBedrockControl,
                                               beat_schedule: None, at: Any) -> None:
        services.throughput_scale_up(now=jst(9), actor="beat")
        control.set_status(control.models()[0].arn, "InService")
        services.throughput_refresh(now=jst(9, 10), actor="beat")
        at(jst(15))
        assert "Turns go back to on-demand" in admin_client.get(reverse(SCALE_DOWN)).content.decode()
        assert len(control.models()) == 1

        assert admin_client.post(reverse(SCALE_DOWN), {"confirm": "yes"}).status_code == 302
        in_process_wait()
        assert control.models() == []
        window = CapacityWindow.objects.get()
        assert (window.kind, window.ends_at) == (WindowKind.MANUAL_OFF, jst(9, day=1))

    def test_an_invalid_number_of_hours_buys_nothing(self, admin_client: Client, control: FakeBedrockControl,
                                                     beat_schedule: None, at: Any) -> None:
        at(jst(2))
        response = admin_client.post(reverse(SCALE_UP), {"hours": "100"})
        assert response.status_code == 200 and b"less than or equal to 12" in response.content
        in_process_wait()
        assert control.requests == [] and not CapacityWindow.objects.exists()

    def test_only_staff_with_the_permission_can_scale(self, control: FakeBedrockControl, beat_schedule: None) -> None:
        client = Client()
        assert client.get(reverse(SCALE_UP)).status_code == 302  # anonymous: to the login page
        User.objects.create_user("customer", password="pw")
        client.login(username="customer", password="pw")
        assert client.post(reverse(SCALE_UP), {"hours": "1"}).status_code == 302  # not staff
        pm = User.objects.create_user("pm", password="pw", is_staff=True)
        pm.user_permissions.add(Permission.objects.get(codename="view_provisionedthroughput"))
        client.login(username="pm", password="pw")
        assert client.get(reverse(CHANGELIST)).status_code == 200  # sees the state
        assert client.post(reverse(SCALE_UP), {"hours": "1"}).status_code == 403  # cannot spend
        pm.user_permissions.add(Permission.objects.get(codename="operate_provisionedthroughput"))
        pm = User.objects.get(pk=pm.pk)  # drop the cached permissions
        client.force_login(pm)
        assert client.get(reverse(SCALE_UP)).status_code == 200
        in_process_wait()
        assert control.requests == []

    def test_switched_off_nothing_happens(self, admin_client: Client, control: FakeBedrockControl,
                                          beat_schedule: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_THROUGHPUT_ENABLED = False
        response = admin_client.post(reverse(SCALE_UP), {"hours": "1"}, follow=True)
        assert b"PROVISIONED_THROUGHPUT_ENABLED is off" in response.content
        in_process_wait()
        assert control.requests == [] and not CapacityWindow.objects.exists()
