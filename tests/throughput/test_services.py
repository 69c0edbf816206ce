"""Scale up, scale down, follow and reconcile: a day in Tokyo, and everything that goes wrong in one.

Real boto3 against the local control-plane fake; time is moved by the test (`now=`), never slept.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from chat.llm.base import Route
from tests.fakes.bedrock_control import FakeBedrockControl
from tests.throughput.conftest import PREFIX, history, jst
from throughput import manager, selectors, services
from throughput.models import (
    Action,
    CapacityWindow,
    ProvisionedThroughput,
    Result,
    ThroughputAction,
    ThroughputStatus,
    WindowKind,
)

CREATE = "CreateProvisionedModelThroughput"
DELETE = "DeleteProvisionedModelThroughput"


def in_service(control: FakeBedrockControl, *, now: Any) -> ProvisionedThroughput:
    """Scale up at `now`, let AWS finish, and let the next poll see it."""
    services.throughput_scale_up(now=now, actor="beat")
    [model] = control.models()
    control.set_status(model.arn, "InService")
    services.throughput_refresh(now=now, actor="beat")
    return ProvisionedThroughput.objects.get(arn=model.arn)


@pytest.mark.django_db
class SimulatedDayTests:
    def test_a_day_in_tokyo(self, control: FakeBedrockControl, beat_schedule: None, at: Any) -> None:
        # 02:00: off-peak; reconciliation has nothing to buy or delete.
        services.throughput_reconcile(now=jst(2), actor="reconcile")
        # A beat delivered early (or late) does not buy off-peak.
        assert services.throughput_scale_up(now=jst(8, 59), actor="beat").result == Result.SKIPPED
        assert control.requests_for(CREATE) == []

        # 09:00: the scale-up beat buys the configured units, no commitment, under a recognisable name.
        assert services.throughput_scale_up(now=jst(9), actor="beat").result == Result.OK
        [model] = control.models()
        assert model.name.startswith(f"{PREFIX}chat-20250602-0900-")
        assert (model.model_units, model.commitment, model.status) == (2, "", "Creating")
        at(jst(9, 1))
        assert selectors.provisioned_route() is None  # Creating: on-demand

        services.throughput_refresh(now=jst(9, 5), actor="beat")
        at(jst(9, 5))
        assert selectors.provisioned_route() is None  # still Creating

        control.set_status(model.arn, "InService")
        at(jst(9, 6))
        assert selectors.provisioned_route() is None  # InService at AWS, but nobody has looked yet
        services.throughput_refresh(now=jst(9, 7), actor="beat")
        at(jst(9, 7))
        assert selectors.provisioned_route() == Route("provisioned", model.arn)

        # The afternoon: reconciliation changes nothing.
        services.throughput_reconcile(now=jst(15), actor="reconcile")
        at(jst(22, 59))
        assert selectors.provisioned_route() == Route("provisioned", model.arn)
        assert control.requests_for(DELETE) == [] and len(control.requests_for(CREATE)) == 1

        # 23:00: the scale-down beat; nothing is left, and the night brings nothing back.
        assert services.throughput_scale_down(now=jst(23), actor="beat").result == Result.OK
        at(jst(23))
        assert selectors.provisioned_route() is None
        assert control.models() == []
        with pytest.raises(manager.ProvisionedModelNotFound):
            manager.provisioned_model_get(provisioned_model_id=model.arn)
        services.throughput_reconcile(now=jst(23, 5), actor="reconcile")
        services.throughput_reconcile(now=jst(2, day=1), actor="reconcile")
        assert control.models() == [] and len(control.requests_for(CREATE)) == 1

        row = ProvisionedThroughput.objects.get()
        assert (row.status, row.in_service_at, row.ended_at) == (ThroughputStatus.DELETED, jst(9, 7), jst(23))
        assert (Action.CREATE, Result.OK) in history() and (Action.DELETE, Result.OK) in history()
        # 14 hours x 2 model units x $40.
        cost = selectors.cost_estimate(now=jst(23, 30))
        assert (cost.model_unit_hours, cost.usd, cost.projected_usd) == (28.0, 1120.0, 1120.0)

        # The next morning starts over with a new model.
        services.throughput_scale_up(now=jst(9, day=1), actor="beat")
        [tomorrow] = control.models()
        assert tomorrow.name.startswith(f"{PREFIX}chat-20250603-0900-") and tomorrow.arn != model.arn

    def test_scale_down_and_reconcile_twice_are_harmless(self, control: FakeBedrockControl,
                                                          beat_schedule: None) -> None:
        in_service(control, now=jst(9))
        services.throughput_scale_down(now=jst(23), actor="beat")
        assert services.throughput_scale_down(now=jst(23), actor="beat").result == Result.SKIPPED
        services.throughput_reconcile(now=jst(23, 1), actor="reconcile")
        assert len(control.requests_for(DELETE)) == 1

    def test_the_scheduled_scale_down_keeps_capacity_an_operator_asked_for(self, control: FakeBedrockControl,
                                                                         beat_schedule: None, at: Any) -> None:
        row = in_service(control, now=jst(9))
        services.throughput_keep_up(now=jst(22, 30), actor="admin:ops", hours=2)
        assert services.throughput_scale_down(now=jst(23), actor="beat").result == Result.SKIPPED
        at(jst(23, 30))
        assert selectors.provisioned_route() == Route("provisioned", row.arn)
        services.throughput_reconcile(now=jst(0, 35, day=1), actor="reconcile")
        assert control.models() == []


@pytest.mark.django_db
class DrainTests:
    def test_routing_stops_for_every_process_before_the_delete(self, control: FakeBedrockControl,
                                                               beat_schedule: None, at: Any, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_DRAIN_SECONDS = 15
        settings.PROVISIONED_ROUTE_CACHE_SECONDS = 5
        row = in_service(control, now=jst(9))
        at(jst(22, 59))
        assert selectors.provisioned_route() == Route("provisioned", row.arn)  # cached for 5 s from here
        at(jst(23))
        seen: list[tuple[float, Route | None, list[str]]] = []

        def sleep(seconds: float) -> None:
            seen.append((seconds, selectors.provisioned_route(), [m.status for m in control.models()]))

        services.throughput_scale_down(now=jst(23), actor="beat", sleep=sleep)
        # During the drain: no route (cache dropped), the model still exists for answers in flight.
        assert seen == [(15, None, ["InService"])]
        assert control.models() == []

    def test_a_worker_that_died_mid_drain_is_finished_by_reconciliation(self, control: FakeBedrockControl,
                                                                         beat_schedule: None, settings) -> None:  # type: ignore[no-untyped-def]
        settings.PROVISIONED_DRAIN_SECONDS = 15
        row = in_service(control, now=jst(9))

        def killed(seconds: float) -> None:
            raise SystemExit("worker killed")

        with pytest.raises(SystemExit):
            services.throughput_scale_down(now=jst(23), actor="beat", sleep=killed)
        row.refresh_from_db()
        assert row.status == ThroughputStatus.DRAINING and len(control.models()) == 1
        services.throughput_reconcile(now=jst(23, 5), actor="reconcile")
        row.refresh_from_db()
        assert row.status == ThroughputStatus.DELETED and control.models() == []


@pytest.mark.django_db
class CreationFailureTests:
    def test_a_refused_creation_leaves_routing_on_demand_and_is_retried_later(self, control: FakeBedrockControl,
                                                                             beat_schedule: None, at: Any) -> None:
        control.fail_next(CREATE, status=400, code="ServiceQuotaExceededException",
                          message="No model units are available for this account")
        outcome = services.throughput_scale_up(now=jst(9), actor="beat")
        assert outcome.result == Result.FAILED and "ServiceQuotaExceededException" in outcome.detail
        row = ProvisionedThroughput.objects.get()
        assert row.status == ThroughputStatus.FAILED and "No model units" in row.failure_message
        at(jst(10))
        assert selectors.provisioned_route() is None
        # Not in a tight loop: reconciliation waits PROVISIONED_RETRY_AFTER_MINUTES (30) after a failure.
        services.throughput_reconcile(now=jst(9, 10), actor="reconcile")
        assert len(control.requests_for(CREATE)) == 1
        services.throughput_reconcile(now=jst(9, 31), actor="reconcile")
        assert len(control.requests_for(CREATE)) == 2 and len(control.models()) == 1

    def test_a_model_that_fails_at_aws_is_deleted_and_never_routed(self, control: FakeBedrockControl,
                                                                   beat_schedule: None, at: Any) -> None:
        services.throughput_scale_up(now=jst(9), actor="beat")
        [model] = control.models()
        control.set_status(model.arn, "Failed", failure_message="Insufficient capacity in us-east-1")
        services.throughput_refresh(now=jst(9, 10), actor="beat")
        row = ProvisionedThroughput.objects.get()
        assert row.status == ThroughputStatus.FAILED and "Insufficient capacity" in row.failure_message
        assert control.models() == []  # a Failed model is deleted, not left listed
        at(jst(9, 11))
        assert selectors.provisioned_route() is None

    def test_a_lost_create_answer_is_found_by_name_not_bought_twice(self, control: FakeBedrockControl,
                                                                     beat_schedule: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(manager, "CONTROL_MAX_ATTEMPTS", 1)
        monkeypatch.setattr(manager, "_clients", {})
        control.fail_next(CREATE, status=500, code="InternalServerException", after_effect=True)
        assert services.throughput_scale_up(now=jst(9), actor="beat").result == Result.FAILED
        row = ProvisionedThroughput.objects.get()
        assert row.status == ThroughputStatus.REQUESTED and len(control.models()) == 1
        # A second delivery finds the claimed row; a poll inside the grace leaves the call alone.
        assert services.throughput_scale_up(now=jst(9, 1), actor="beat").result == Result.SKIPPED
        services.throughput_refresh(now=jst(9, 2), actor="beat")
        row.refresh_from_db()
        assert row.status == ThroughputStatus.REQUESTED
        services.throughput_refresh(now=jst(9, 4), actor="beat")
        row.refresh_from_db()
        assert (row.status, row.arn) == (ThroughputStatus.CREATING, control.models()[0].arn)
        assert len(control.requests_for(CREATE)) == 1

    def test_a_create_that_never_arrived_is_sent_again_with_the_same_token(self, control: FakeBedrockControl,
                                                                            beat_schedule: None,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(manager, "CONTROL_MAX_ATTEMPTS", 1)
        monkeypatch.setattr(manager, "_clients", {})
        control.fail_next(CREATE, status=503, code="ServiceUnavailableException")
        services.throughput_scale_up(now=jst(9), actor="beat")
        assert control.models() == []
        services.throughput_refresh(now=jst(9, 4), actor="beat")
        first, second = control.requests_for(CREATE)
        assert first.body["clientRequestToken"] == second.body["clientRequestToken"]
        assert ProvisionedThroughput.objects.get().status == ThroughputStatus.CREATING and len(control.models()) == 1


@pytest.mark.django_db
class StuckCreationTests:
    def test_a_model_stuck_in_creating_is_never_routed_then_given_up(self, control: FakeBedrockControl,
                                                                     beat_schedule: None, at: Any) -> None:
        services.throughput_scale_up(now=jst(9), actor="beat")
        services.throughput_refresh(now=jst(9, 30), actor="beat")
        at(jst(9, 30))
        assert selectors.provisioned_route() is None
        assert ProvisionedThroughput.objects.get().status == ThroughputStatus.CREATING
        # PROVISIONED_CREATE_TIMEOUT_MINUTES (60) later: given up and deleted.
        services.throughput_refresh(now=jst(10), actor="beat")
        row = ProvisionedThroughput.objects.get()
        assert row.status == ThroughputStatus.FAILED and "still Creating after 60 min" in row.failure_message
        assert control.models() == []
        at(jst(10, 1))
        assert selectors.provisioned_route() is None
        services.throughput_reconcile(now=jst(10, 5), actor="reconcile")
        assert len(control.requests_for(CREATE)) == 1
        services.throughput_reconcile(now=jst(10, 31), actor="reconcile")
        assert len(control.requests_for(CREATE)) == 2


    def test_a_poll_that_fails_changes_nothing_and_the_next_one_catches_up(self, control: FakeBedrockControl,
                                                                           beat_schedule: None) -> None:
        services.throughput_scale_up(now=jst(9), actor="beat")
        control.set_status(control.models()[0].arn, "InService")
        control.fail_next("GetProvisionedModelThroughput", status=403, code="AccessDeniedException")
        recorded = ThroughputAction.objects.count()
        assert services.throughput_refresh(now=jst(9, 10), actor="beat") == []
        assert ProvisionedThroughput.objects.get().status == ThroughputStatus.CREATING
        assert ThroughputAction.objects.count() == recorded
        services.throughput_refresh(now=jst(9, 11), actor="beat")
        assert ProvisionedThroughput.objects.get().status == ThroughputStatus.IN_SERVICE


@pytest.mark.django_db(transaction=True)
class ConcurrentBeatTests:
    def test_two_deliveries_at_once_buy_one_model(self, control: FakeBedrockControl, beat_schedule: None) -> None:
        control.delays[CREATE] = 0.3  # the first create is still in flight when the second delivery runs
        barrier = threading.Barrier(2)
        outcomes: list[services.Outcome] = []
        errors: list[BaseException] = []

        def deliver(n: int) -> None:
            try:
                barrier.wait(timeout=5)
                outcomes.append(services.throughput_scale_up(now=jst(9), actor=f"beat:delivery-{n}"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=deliver, args=(n,)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert sorted(outcome.result for outcome in outcomes) == [Result.OK, Result.SKIPPED]
        assert len(control.requests_for(CREATE)) == 1 and len(control.models()) == 1
        assert ProvisionedThroughput.objects.count() == 1

    def test_the_database_refuses_a_second_active_model_for_one_purpose(self) -> None:
        fields = dict(model_id="m", model_units=1, trigger="schedule", requested_by="test", requested_at=jst(9))
        ProvisionedThroughput.objects.create(name="a", client_request_token="a", status=ThroughputStatus.CREATING,
                                             **fields)
        ProvisionedThroughput.objects.create(name="b", client_request_token="b", status=ThroughputStatus.DELETED,
                                             **fields)
        with pytest.raises(IntegrityError), transaction.atomic():
            ProvisionedThroughput.objects.create(name="c", client_request_token="c",
                                                 status=ThroughputStatus.REQUESTED, **fields)


@pytest.mark.django_db
class LeakTests:
    def test_a_leak_found_at_two_in_the_morning_is_deleted(self, control: FakeBedrockControl,
                                                           beat_schedule: None) -> None:
        crashed = control.add_model(name=f"{PREFIX}chat-20250601-0900-deadbeef", status="InService")
        failed = control.add_model(name=f"{PREFIX}chat-20250601-0930-cafebabe", status="Failed")
        foreign = control.add_model(name="search-team-reranker", status="InService")
        lookalike = control.add_model(name=f"x-{PREFIX}chat", status="InService")
        committed = control.add_model(name=f"{PREFIX}chat-committed", status="InService", commitment="OneMonth")

        services.throughput_reconcile(now=jst(2), actor="reconcile")
        assert {m.name for m in control.models()} == {foreign.name, lookalike.name, committed.name}
        assert {r.provisioned_model_id for r in control.requests_for(DELETE)} == {crashed.arn, failed.arn}
        assert history().count((Action.LEAK, Result.OK)) == 2
        report = ThroughputAction.objects.get(action=Action.COMMITTED)
        assert report.result == Result.REPORTED and report.arn == committed.arn and "OneMonth" in report.detail

        # Reported once a day, never deleted.
        services.throughput_reconcile(now=jst(2, 5), actor="reconcile")
        assert ThroughputAction.objects.filter(action=Action.COMMITTED).count() == 1
        services.throughput_reconcile(now=jst(2, day=1), actor="reconcile")
        assert ThroughputAction.objects.filter(action=Action.COMMITTED).count() == 2
        assert len(control.requests_for(DELETE)) == 2

    def test_a_model_left_running_after_a_missed_scale_down_is_deleted(self, control: FakeBedrockControl,
                                                                       beat_schedule: None, at: Any) -> None:
        row = in_service(control, now=jst(9))
        at(jst(2, day=1))
        assert selectors.provisioned_route() is None  # off-peak: never routed, even before the delete
        services.throughput_reconcile(now=jst(2, day=1), actor="reconcile")
        row.refresh_from_db()
        assert row.status == ThroughputStatus.DELETED and control.models() == []

    def test_a_model_being_created_right_now_is_not_a_leak(self, control: FakeBedrockControl,
                                                           beat_schedule: None) -> None:
        # Another worker claimed the row and AWS created the model; the worker has not recorded the ARN yet.
        ProvisionedThroughput.objects.create(
            name=f"{PREFIX}chat-20250602-0900-0badc0de", client_request_token="t", model_id="m", model_units=2,
            status=ThroughputStatus.REQUESTED, trigger="schedule", requested_by="beat", requested_at=jst(9))
        control.add_model(name=f"{PREFIX}chat-20250602-0900-0badc0de", status="Creating")
        services.throughput_reconcile(now=jst(9, 1), actor="reconcile")
        assert len(control.models()) == 1 and control.requests_for(DELETE) == []

    def test_a_model_deleted_outside_mangaassist_stops_receiving_turns(self, control: FakeBedrockControl,
                                                                       beat_schedule: None, at: Any) -> None:
        row = in_service(control, now=jst(9))
        manager.provisioned_model_delete(provisioned_model_id=row.arn)  # someone in the console
        services.throughput_reconcile(now=jst(10), actor="reconcile")
        row.refresh_from_db()
        assert row.status == ThroughputStatus.DELETED
        at(jst(10))
        assert selectors.provisioned_route() is None
        # Still peak hours: the next reconciliation buys a replacement.
        services.throughput_reconcile(now=jst(10, 5), actor="reconcile")
        assert len(control.models()) == 1


@pytest.mark.django_db
class ManualTests:
    def test_kept_up_by_hand_off_peak_until_the_hours_pass(self, control: FakeBedrockControl,
                                                          beat_schedule: None, at: Any) -> None:
        services.throughput_keep_up(now=jst(2), actor="admin:ops", hours=2)
        assert services.throughput_scale_up(now=jst(2), actor="admin:ops", trigger="manual").result == Result.OK
        [model] = control.models()
        control.set_status(model.arn, "InService")
        services.throughput_refresh(now=jst(2, 20), actor="beat")
        at(jst(2, 30))
        assert selectors.provisioned_route() == Route("provisioned", model.arn)
        services.throughput_reconcile(now=jst(3), actor="reconcile")
        assert len(control.models()) == 1
        services.throughput_reconcile(now=jst(4), actor="reconcile")
        assert control.models() == []

    def test_kept_down_by_hand_until_the_next_scheduled_scale_up(self, control: FakeBedrockControl,
                                                                beat_schedule: None) -> None:
        in_service(control, now=jst(9))
        window = services.throughput_keep_down(now=jst(15), actor="admin:ops")
        assert (window.kind, window.ends_at) == (WindowKind.MANUAL_OFF, jst(9, day=1))
        services.throughput_scale_down(now=jst(15), actor="admin:ops")
        assert control.models() == []
        # Reconciliation in peak hours does not undo the operator's decision.
        services.throughput_reconcile(now=jst(15, 5), actor="reconcile")
        assert services.throughput_scale_up(now=jst(16), actor="beat").result == Result.SKIPPED
        assert control.models() == []
        services.throughput_scale_up(now=jst(9, day=1), actor="beat")
        assert len(control.models()) == 1

    def test_keeping_up_ends_a_kept_down_window(self, beat_schedule: None) -> None:
        services.throughput_keep_down(now=jst(10), actor="admin:a")
        services.throughput_keep_up(now=jst(11), actor="admin:b", hours=1)
        assert selectors.capacity_plan(now=jst(11, 30)).reason == "kept up by admin:b"
        assert CapacityWindow.objects.get(kind=WindowKind.MANUAL_OFF).ends_at == jst(11)
