"""The prefetch and relearning tasks through mangaassist.celery: in-process, on a real broker, with none."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime
from typing import Callable

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.core.cache import cache
from prometheus_client import REGISTRY

from chat.assembly import AssembledContext, facts_key, reviews_key
from chat.entities import Entities
from chat.selectors import Memory
from mangaassist.celery import app, enqueue, in_process_wait
from prefetch import speculation
from prefetch.models import TransitionProposal
from prefetch.schedule import PREFETCH_BEAT_ENTRIES
from prefetch.selectors import prediction_key
from prefetch.services import QUEUE_WAIT_SECONDS, prefetch_enqueue
from prefetch.tasks import prefetch_task, transitions_relearn_task
from tests.conftest import require_service
from tests.prefetch.conftest import CLOSED_BROKER, REDIS_BROKER
from tests.prefetch.test_services import _follow_ups

SESSION = "task-session"


def _context(intent: str, conversation: uuid.UUID) -> AssembledContext:
    """What the orchestrator holds after an answer (only what prefetch_enqueue reads is filled in)."""
    return AssembledContext(intent=intent, confidence=0.9, message="", memory=Memory(), entities=Entities(),
                            conversation_id=conversation)


def _queued(result: str) -> float:
    return REGISTRY.get_sample_value("mangaassist_tasks_queued_total",
                                     {"task": "prefetch.prefetch_for_turn", "result": result}) or 0.0


@pytest.mark.usefixtures("transitions")
class PrefetchTaskTests:
    def test_the_task_runs_through_enqueue_in_embedded_mode(self, shown: list[int]) -> None:
        conversation = str(uuid.uuid4())
        assert enqueue(prefetch_task, args=("product_discovery", shown[:3], SESSION, conversation), expires=10)
        in_process_wait()
        assert set(cache.get_many([facts_key(pid) for pid in shown[:3]] + [reviews_key(pid) for pid in shown[:3]])) \
            == {facts_key(pid) for pid in shown[:3]} | {reviews_key(pid) for pid in shown[:3]}
        assert cache.get(prediction_key(conversation))["from_intent"] == "product_discovery"

    def test_prefetch_enqueue_queues_it_after_the_answer(self, shown: list[int]) -> None:
        conversation = uuid.uuid4()
        assert prefetch_enqueue(context=_context("recommendation", conversation), presented_ids=shown[:5],
                                session_key=SESSION)
        in_process_wait()
        record = cache.get(prediction_key(conversation))
        assert record["product_ids"] == shown[:3]  # at most 3 products per key
        assert {facts_key(pid) for pid in shown[:3]} <= set(record["keys"])

    def test_nothing_likely_nothing_queued_and_the_older_prediction_goes(self, shown: list[int]) -> None:
        conversation = uuid.uuid4()
        prefetch_enqueue(context=_context("product_discovery", conversation), presented_ids=shown[:3],
                         session_key=SESSION)
        in_process_wait()
        before = _queued("in_process")
        assert not prefetch_enqueue(context=_context("order_tracking", conversation), presented_ids=[],
                                    session_key=SESSION)
        assert _queued("in_process") == before
        assert cache.get(prediction_key(conversation)) is None

    def test_with_the_broker_down_prefetch_enqueue_returns_at_once(self, shown: list[int], broker: Callable) -> None:
        broker(CLOSED_BROKER)
        conversation = uuid.uuid4()
        skipped = _queued("skipped")
        started = time.monotonic()
        prefetch_enqueue(context=_context("product_discovery", conversation), presented_ids=shown[:3],
                         session_key=SESSION)
        assert time.monotonic() - started < 1.0
        assert _queued("skipped") == skipped + 1
        # The next turn is judged a miss, not against an older prediction.
        assert cache.get(prediction_key(conversation))["keys"] == []

    def test_on_a_real_broker_the_task_expires_with_the_prefetch_deadline(self, shown: list[int],
                                                                          broker: Callable) -> None:
        require_service("Redis", REDIS_BROKER, 6379)
        import redis

        queues = [app.conf.task_default_queue, settings.SPECULATION_QUEUE]
        client = redis.Redis.from_url(REDIS_BROKER)
        client.delete(*queues)
        broker(REDIS_BROKER)
        try:
            sent_at = time.time()
            prefetch_enqueue(context=_context("product_discovery", uuid.uuid4()), presented_ids=shown[:3],
                             session_key=SESSION)
            messages = {m["headers"]["task"]: m for queue in queues
                        for m in map(json.loads, client.lrange(queue, 0, -1))}
            assert [json.loads(m)["headers"]["task"] for m in client.lrange(settings.SPECULATION_QUEUE, 0, -1)] == [
                "prefetch.speculate"]  # on its own queue: never ahead of or behind the prefetches
        finally:
            client.delete(*queues)
        # product_discovery -> product_question (0.45) is likely enough to prepare the answer too.
        assert set(messages) == {"prefetch.prefetch_for_turn", "prefetch.speculate"}
        headers = messages["prefetch.prefetch_for_turn"]["headers"]
        expires_in = datetime.fromisoformat(headers["expires"]).timestamp() - sent_at
        assert 2.0 + QUEUE_WAIT_SECONDS - 1 < expires_in < 2.0 + QUEUE_WAIT_SECONDS + 1
        args, kwargs, _ = json.loads(base64.b64decode(messages["prefetch.prefetch_for_turn"]["body"]))
        assert args[0] == "product_discovery" and args[1] == shown[:3] and "predicted_at" in kwargs
        speculate = messages["prefetch.speculate"]
        expires_in = datetime.fromisoformat(speculate["headers"]["expires"]).timestamp() - sent_at
        assert speculation.QUEUE_WAIT_SECONDS - 1 < expires_in < speculation.QUEUE_WAIT_SECONDS + 1
        _, kwargs, _ = json.loads(base64.b64decode(speculate["body"]))
        assert kwargs["product_id"] == shown[0] and kwargs["from_intent"] == "product_discovery"
        assert kwargs["predicted_at"] == json.loads(base64.b64decode(
            messages["prefetch.prefetch_for_turn"]["body"]))[1]["predicted_at"]


class TaskOptionsTests:
    def test_only_connection_errors_are_retried_and_late_acks_make_redelivery_safe(self) -> None:
        import redis
        from django.db import InterfaceError

        for task in (prefetch_task, transitions_relearn_task):
            assert task.acks_late
            assert set(task.autoretry_for) == {ConnectionError, redis.exceptions.ConnectionError, InterfaceError}


@pytest.mark.django_db
class RelearnTaskTests:
    def test_the_beat_task_proposes_from_the_settings(self) -> None:
        _follow_ups("product_discovery", "product_question", 30)
        summary = transitions_relearn_task.apply(kwargs={"actor": "beat:prefetch: relearn transitions"}).get()
        assert summary["proposals"] == 3 and not summary["applied"]
        assert TransitionProposal.objects.filter(from_intent="product_discovery").count() == 3


class BeatEntryTests:
    def test_the_entry_names_a_registered_task_and_a_daily_tokyo_crontab(self) -> None:
        [entry] = PREFETCH_BEAT_ENTRIES
        assert entry["task"] in app.tasks
        schedule = crontab(minute=entry["minute"], hour=entry["hour"])
        assert schedule.hour == {4} and schedule.minute == {0}

    def test_it_merges_into_the_throughput_schedule(self) -> None:
        BeatEntry = pytest.importorskip("throughput.schedule").BeatEntry  # owned by the throughput issue

        assert BeatEntry(**PREFETCH_BEAT_ENTRIES[0]).task == "prefetch.transitions_relearn"
