"""The widget in a real browser while its web process is killed (SIGKILL) and restarted mid-answer.

Scaled mode (Redis, PostgreSQL: tests/scaled/conftest.py): the killed process saves
nothing, but every delta it sent is in the stream log in Redis. The browser reconnects
with backoff; the restarted process replays what the browser missed and continues the
answer from the logged text.

The browser reaches the web process through a TCP relay standing in for a load balancer
with health checks: a restarted process gets traffic once /healthz says it has warmed up.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Iterator

import psycopg
import pytest
from django.core.cache.backends.redis import RedisCache

from bench.stack import ScaledStack, free_port
from chat import streamlog
from tests.browser.test_widget import (PACED, QUESTION, Chat, TcpSwitch, _delta_indexes, browser,  # noqa: F401
                                       new_page)
from tests.scaled.conftest import scaled_stack_on

pytestmark = pytest.mark.scaled

# A Redis database and a PostgreSQL database of its own: the `scaled_stack` of conftest.py flushes and
# drops its (fixed) ones when it starts, which would pull them from under this test in a parallel run.
REDIS_URL = os.environ.get("TEST_WIDGET_REDIS_URL", "redis://127.0.0.1:6379/10")
DATABASE = f"mangaassist_widget_scaled_test_{os.getpid()}"
WIDGET_ENV = {**PACED, "CHAT_RATE_LIMIT_PER_IP": "1000"}

# Each connection attempt the page makes, timestamped (the widget's reconnect backoff).
SOCKET_ATTEMPTS = """
(() => {
  const attempts = [];
  Object.defineProperty(window, "__socketAttempts", { value: attempts });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      attempts.push(performance.now());
    }
  };
})();
"""


@pytest.fixture(scope="module")
def widget_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledStack]:
    with scaled_stack_on(REDIS_URL, DATABASE, dict(os.environ), tmp_path_factory.mktemp("widget-scaled-logs")) as stack:
        yield stack


def _saved_answers(stack: ScaledStack, message_id: str) -> int:
    with psycopg.connect(stack.env["DATABASE_URL"].replace("postgres://", "postgresql://")) as conn:
        row = conn.execute("SELECT count(*) FROM chat_turn WHERE client_message_id = %s AND role = 'assistant'",
                           (message_id,)).fetchone()
    return row[0]


@pytest.fixture
def switch() -> Iterator[TcpSwitch]:
    relay = TcpSwitch()
    yield relay
    relay.close()


class WidgetScaledTests:
    def test_web_process_killed_and_restarted_mid_answer_the_answer_resumes_intact(
            self, widget_stack: ScaledStack, switch: TcpSwitch, new_page: Any) -> None:
        # The browser talks to a load balancer (a TCP relay) that sends it to ready web processes only.
        port = free_port()
        switch.route_to(widget_stack.start_web("widget-web-1", WIDGET_ENV, port=port, timeout=60))
        page = new_page()
        page.add_init_script(SOCKET_ATTEMPTS)
        chat = Chat(page, switch.url).open_store()
        chat.open_panel()
        chat.ask(QUESTION)
        before = chat.wait_streaming(at_least=40)

        killed = widget_stack.processes[-1]
        switch.route_to(None)  # its health check fails from now on
        os.killpg(killed.pid, signal.SIGKILL)  # a crash: nothing is saved, nothing is closed cleanly
        killed.wait(timeout=10)
        page.wait_for_function("""() => document.getElementById("mangaassist-widget").dataset.connection
                                  === "reconnecting" """)
        page.wait_for_function("() => window.__socketAttempts.length >= 5", timeout=30_000)  # refused, retried
        waiting = chat.last_answer()
        assert waiting["id"] == before["id"] and waiting["state"] == "streaming"
        assert waiting["shown"].startswith(before["shown"])  # what was painted stays on screen
        assert _saved_answers(widget_stack, before["id"]) == 0  # the killed process saved no partial answer
        # ...but what it sent is in the stream log in Redis (which trails the socket by one batch at most:
        # the deltas of the batch the kill cut short are written again by the continuation).
        head = RedisCache(REDIS_URL, {"KEY_PREFIX": "mangaassist"}).get(
            streamlog.message_key(chat.conversation(), before["id"]) + ":head")
        painted = len(_delta_indexes(chat.frames(), before["id"]))
        assert head["state"] == streamlog.OPEN and painted - 5 <= head["n"], (head, painted)

        # Restarted on the same address, as by a supervisor; back behind the balancer once it is ready.
        switch.route_to(widget_stack.start_web("widget-web-2", WIDGET_ENV, port=port, timeout=60))
        completed = chat.wait_answer("completed", timeout=60_000)
        assert completed["id"] == before["id"]

        frames = chat.frames()
        resumes = [f for f in frames if f["dir"] == "out" and f["type"] == "resume"]
        assert [r["id"] for r in resumes] == [before["id"]] and resumes[0]["after"] >= 0
        indexes = _delta_indexes(frames, before["id"])
        assert indexes == list(range(len(indexes)))  # every delta once, in order, across the crash
        saved = chat.saved_answer(before["id"])
        shown = chat.answer(before["id"])
        assert saved["status"] == "complete" and shown["text"] == saved["text"]
        # Painted frames the log never got (the kill cut its last batch) are written anew from the logged
        # text: their words (a real model's would differ too) and their frames (coalesced in time) need not
        # fall where the lost ones did, so the widget corrects its text from `completed`. Only then.
        browser_ahead_of_log = resumes[0]["after"] >= head["n"]
        assert not shown["repaired"] or browser_ahead_of_log, (resumes[0], head)
        assert page.locator(".msg.error").count() == 0

        # Reconnecting backed off: each wait at least as long as the one before (jitter within the doubling).
        attempts = page.evaluate("window.__socketAttempts")
        gaps = [later - earlier for earlier, later in zip(attempts[1:], attempts[2:])]
        assert len(gaps) >= 3 and all(b >= a - 50 for a, b in zip(gaps, gaps[1:])) and gaps[-1] > 2 * gaps[0]

        # The conversation goes on on the new process.
        chat.ask("Tell me more about the first one")
        chat.wait_answer("completed")
