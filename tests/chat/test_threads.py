"""The customer's path first: background jobs wait while a turn is prepared, within a bound."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chat.threads import ForegroundGate, gate, run_background


def test_a_background_job_starts_once_no_turn_is_being_prepared() -> None:
    local = ForegroundGate()
    started = threading.Event()

    def job() -> None:
        local.wait_quiet(5.0)
        started.set()

    with local.foreground():
        with local.foreground():  # two turns at once: the job waits for both
            thread = threading.Thread(target=job)
            thread.start()
            assert not started.wait(0.05)
        assert not started.wait(0.05) and local.busy == 1
    assert started.wait(1.0)
    thread.join()
    assert local.busy == 0


def test_a_busy_process_still_runs_its_background_jobs_after_the_bound() -> None:
    local = ForegroundGate()
    with local.foreground():
        began = time.monotonic()
        local.wait_quiet(0.05)
        waited = time.monotonic() - began
    assert 0.04 <= waited < 1.0


def test_the_gate_is_released_when_the_turn_fails() -> None:
    local = ForegroundGate()
    with pytest.raises(RuntimeError):
        with local.foreground():
            raise RuntimeError("assembly failed")
    assert local.busy == 0
    local.wait_quiet(5.0)  # returns at once


@pytest.mark.django_db
def test_run_background_waits_for_the_turn_being_prepared(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CHAT_BACKGROUND_MAX_DEFER_MS = 5000
    ran_at: list[float] = []

    async def scenario() -> float:
        with gate.foreground():
            job = asyncio.create_task(run_background(lambda: ran_at.append(time.monotonic())))
            await asyncio.sleep(0.1)
            assert not ran_at  # deferred while the turn is prepared
            released = time.monotonic()
        await job
        return released

    released = asyncio.run(scenario())
    assert ran_at and ran_at[0] >= released


@pytest.mark.django_db
def test_a_customer_message_is_written_before_the_writes_that_follow_answers() -> None:
    from django.db import connection

    from chat.threads import WriteQueue

    if connection.vendor != "sqlite":
        pytest.skip("the queue only orders SQLite's writers")
    queue = WriteQueue()
    order: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with queue.turn():
            with queue.turn():  # the same thread again: no deadlock
                release.wait(5)
            order.append("first")

    def writer(name: str, urgent: bool) -> None:
        with queue.turn(urgent=urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    time.sleep(0.05)
    background = threading.Thread(target=writer, args=("answer", False))
    background.start()
    time.sleep(0.05)
    message = threading.Thread(target=writer, args=("message", True))
    message.start()
    time.sleep(0.05)
    assert order == []  # both wait for the writer before them
    release.set()
    for thread in (first, background, message):
        thread.join(5)
    assert order == ["first", "message", "answer"]
