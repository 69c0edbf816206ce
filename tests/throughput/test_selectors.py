"""What the orchestrator sees: `provisioned_route()` in each state, cheap and never raising; and the cost."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import DatabaseError
from django.utils import timezone

from chat.consumers import ChatConsumer
from chat.llm.base import Route
from chat.llm.bedrock import BedrockBackend
from chat.models import Role, Turn, TurnRecord
from chat.orchestrator import Orchestrator
from tests.conftest import SONNET, open_chat, saved_turns
from tests.fakes.bedrock_control import FakeBedrockControl
from tests.fakes.bedrock_runtime import FakeBedrockRuntime, Reply
from tests.throughput.conftest import jst
from throughput import selectors, services
from throughput.models import CapacityWindow, ProvisionedThroughput, ThroughputStatus, WindowKind

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefghijkl"


def throughput_row(status: str, *, arn: str = ARN, requested_at: datetime | None = None, units: int = 2,
                   commitment: str = "", ended_at: datetime | None = None) -> ProvisionedThroughput:
    return ProvisionedThroughput.objects.create(
        name=f"mangaassist-chat-{status}-{ProvisionedThroughput.objects.count()}", client_request_token=uuid.uuid4().hex,
        arn=arn, model_id=SONNET, model_units=units, commitment=commitment, status=status, trigger="schedule",
        requested_by="test", requested_at=requested_at or jst(9), ended_at=ended_at)


@pytest.mark.django_db
class ProvisionedRouteTests:
    def test_routes_in_each_state(self, control: FakeBedrockControl, beat_schedule: None, at: Any,
                                  settings) -> None:  # type: ignore[no-untyped-def]
        settings.LLM_FALLBACK_MODEL_ID = HAIKU
        orchestrator = Orchestrator(backend=BedrockBackend())

        def routes(moment: datetime) -> list[tuple[str, str]]:
            """[provisioned, on_demand, secondary]: the provisioned route, when there is one, before the rest."""
            at(moment)
            provisioned = selectors.provisioned_route()
            return [(route.name, route.model_id) for route in ([provisioned] if provisioned else [])
                    + orchestrator.routes()]

        on_demand = [("on_demand", SONNET), ("secondary", HAIKU)]
        assert routes(jst(10)) == on_demand  # none
        row = throughput_row(ThroughputStatus.REQUESTED, arn="")
        assert routes(jst(10)) == on_demand  # create call sent
        ProvisionedThroughput.objects.filter(pk=row.pk).update(status=ThroughputStatus.CREATING, arn=ARN)
        assert routes(jst(10)) == on_demand  # creating
        ProvisionedThroughput.objects.filter(pk=row.pk).update(status=ThroughputStatus.IN_SERVICE)
        assert routes(jst(10)) == [("provisioned", ARN)] + on_demand  # in service, peak hours
        assert routes(jst(23, 30)) == on_demand  # in service, off-peak (before reconciliation deletes it)
        ProvisionedThroughput.objects.filter(pk=row.pk).update(status=ThroughputStatus.DRAINING)
        assert routes(jst(10)) == on_demand  # draining
        ProvisionedThroughput.objects.filter(pk=row.pk).update(status=ThroughputStatus.DELETED)
        assert routes(jst(10)) == on_demand  # deleted
        settings.PROVISIONED_THROUGHPUT_ENABLED = False
        ProvisionedThroughput.objects.filter(pk=row.pk).update(status=ThroughputStatus.IN_SERVICE)
        assert routes(jst(10)) == on_demand  # switched off

    def test_the_answer_is_cached_and_a_change_drops_it(self, control: FakeBedrockControl, beat_schedule: None,
                                                        at: Any, settings,
                                                        django_assert_num_queries: Any) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_ROUTE_CACHE_SECONDS = 5
        throughput_row(ThroughputStatus.IN_SERVICE)
        at(jst(10))
        assert selectors.provisioned_route() == Route("provisioned", ARN)
        with django_assert_num_queries(0):
            assert selectors.provisioned_route() == Route("provisioned", ARN)
        services.throughput_keep_down(now=jst(10), actor="admin:ops")  # a change of plan drops the cached answer
        assert selectors.provisioned_route() is None

    def test_switched_off_it_costs_no_query(self, settings, django_assert_num_queries: Any) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_THROUGHPUT_ENABLED = False
        with django_assert_num_queries(0):
            assert selectors.provisioned_route() is None

    def test_a_broken_database_or_cache_means_on_demand(self, control: FakeBedrockControl,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(**kwargs: Any) -> str:
            raise DatabaseError("database is locked")

        monkeypatch.setattr(selectors, "routable_arn", broken)
        assert selectors.provisioned_route() is None
        monkeypatch.setattr(cache, "get", lambda *args, **kwargs: (_ for _ in ()).throw(ConnectionError("redis")))
        assert selectors.provisioned_route() is None


@pytest.fixture
def runtime(bedrock_runtime: FakeBedrockRuntime) -> FakeBedrockRuntime:
    return bedrock_runtime


class RoutingFallbackTests:
    @pytest.mark.django_db(transaction=True)
    async def test_a_throttled_provisioned_model_falls_back_to_on_demand_for_that_answer(
            self, demo_catalog: None, runtime: FakeBedrockRuntime, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_THROUGHPUT_ENABLED = True
        settings.LLM_MAX_RETRIES = 0  # with retries, the policy tries the provisioned route again first
        # This test is about the order of routes, not latency: a loaded machine must not hit the deadline.
        settings.LLM_FIRST_TOKEN_DEADLINE_SECONDS = 30

        def in_service_and_kept_up() -> None:
            now = timezone.now()
            throughput_row(ThroughputStatus.IN_SERVICE, requested_at=now - timedelta(hours=1))
            CapacityWindow.objects.create(kind=WindowKind.MANUAL_ON, starts_at=now - timedelta(minutes=5),
                                          ends_at=now + timedelta(hours=1), created_by="test")

        await sync_to_async(in_service_and_kept_up)()
        backend = BedrockBackend()
        await sync_to_async(backend.warm)()  # as the web process does at start (mangaassist.warmup)
        ChatConsumer.orchestrator = Orchestrator(backend=backend)  # the orchestrator asks provisioned_route() itself
        runtime.push(Reply(status=429), Reply(chunks=["**Naruto**", " is in stock."]))
        chat = await open_chat()
        await chat.send({"type": "message", "id": "p1", "text": "Is Naruto in stock?"})
        frames = await chat.until("completed", "error", timeout=40)
        await chat.ws.disconnect()
        assert frames[-1]["type"] == "completed", (frames[-1], [(c.model_id, c.operation) for c in runtime.calls])
        assert frames[-1]["text"] == "**Naruto** is in stock."
        assert frames[-1]["metrics"]["route"] == "on_demand"
        assert [call.model_id for call in runtime.calls] == [ARN, SONNET]
        await saved_turns(2)
        record = await sync_to_async(TurnRecord.objects.get)(client_message_id="p1")
        assert record.route == "on_demand"
        assert await sync_to_async(Turn.objects.filter(role=Role.ASSISTANT, client_message_id="p1").count)() == 1


@pytest.mark.django_db
class LatencyTests:
    def test_p95_uses_the_nearest_rank(self) -> None:
        from tests.throughput.conftest import record_answers

        record_answers(at=jst(10), first_token_ms=[float(ms) for ms in range(1, 101)])
        sample = selectors.first_token_p95(since=jst(9, 55), until=jst(10))
        assert (sample.p95_ms, sample.samples) == (95.0, 100)
        assert selectors.first_token_p95(since=jst(10), until=jst(10, 5)) == selectors.LatencySample(None, 0)


@pytest.mark.django_db
class CostEstimateTests:
    def test_so_far_and_projected_to_the_scale_down(self, control: FakeBedrockControl, beat_schedule: None) -> None:
        throughput_row(ThroughputStatus.IN_SERVICE, requested_at=jst(9))
        cost = selectors.cost_estimate(now=jst(12))
        # 3 h x 2 MU x $40 so far; until 23:00: 14 h x 2 x 40.
        assert (cost.model_unit_hours, cost.usd, cost.projected_usd) == (6.0, 240.0, 1120.0)

    def test_a_night_window_is_split_between_tokyo_days(self, control: FakeBedrockControl,
                                                         beat_schedule: None) -> None:
        throughput_row(ThroughputStatus.DELETED, requested_at=jst(23, 30), ended_at=jst(0, 30, day=1), units=1)
        assert selectors.cost_estimate(now=jst(23, 45)).model_unit_hours == 0.25  # so far, at 23:45
        assert selectors.cost_estimate(now=jst(12, day=1)).model_unit_hours == 0.5  # 00:00-00:30 the next day

    def test_a_committed_term_bills_all_day(self, control: FakeBedrockControl, beat_schedule: None) -> None:
        throughput_row(ThroughputStatus.IN_SERVICE, requested_at=jst(0), commitment="OneMonth", units=1)
        cost = selectors.cost_estimate(now=jst(12))
        assert (cost.usd, cost.projected_usd) == (480.0, 960.0)

    def test_a_creation_refused_costs_nothing(self, control: FakeBedrockControl, beat_schedule: None) -> None:
        throughput_row(ThroughputStatus.FAILED, arn="", requested_at=jst(9), ended_at=jst(9))
        assert selectors.cost_estimate(now=jst(12)).usd == 0


@pytest.mark.django_db
class ThroughputStateTests:
    def test_dashboard_state_when_off_and_when_in_service(self, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_THROUGHPUT_ENABLED = False
        assert selectors.throughput_state()["enabled"] is False
        settings.PROVISIONED_THROUGHPUT_ENABLED = True
        assert selectors.throughput_state()["state"] == "none"
        throughput_row(ThroughputStatus.IN_SERVICE, requested_at=timezone.now() - timedelta(hours=2), units=2)
        state = selectors.throughput_state()
        assert state["state"] == "In service" and state["model units"] == 2
        assert float(state["cost today (USD)"].split(" ")[0].replace(",", "")) > 0  # two units for two hours
