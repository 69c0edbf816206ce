"""The PM dashboard in the admin: charts drawn from TurnRecord, staff only, bounded queries at 100k rows."""

from __future__ import annotations

import math
import random
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, Role, Turn, TurnRecord, TurnStatus
from chat.selectors_dashboard import HOUR, dashboard_read

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"


def records_create(rows: list[dict[str, Any]]) -> list[TurnRecord]:
    """bulk_create TurnRecords at the created_at each row gives (auto_now_add would stamp them all "now")."""
    defaults = {"client_message_id": "m", "status": TurnStatus.COMPLETE, "route": "on_demand", "backend": "simulated"}
    with mock.patch.object(TurnRecord._meta.get_field("created_at"), "auto_now_add", False):
        return TurnRecord.objects.bulk_create([TurnRecord(**{**defaults, **row}) for row in rows])


def hour_label(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:00")


def nearest_rank(values: list[float], percentile: int) -> float:
    """The textbook nearest-rank percentile, to check the database's against."""
    ordered = sorted(values)
    return ordered[math.ceil(percentile / 100 * len(ordered)) - 1]


@dataclass
class Shape:
    chart: str
    tag: str
    attrs: dict[str, str]
    series: str = ""
    title: str = ""


class SvgShapes(HTMLParser):
    """The circles, bars and lines of every <svg data-chart> on a page, with their <title> text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.shapes: list[Shape] = []
        self._chart = ""
        self._series = ""
        self._in_title: Shape | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "svg" and "data-chart" in values:
            self._chart = values["data-chart"]
        elif tag == "g" and "data-series" in values:
            self._series = values["data-series"]
        elif self._chart and tag in {"circle", "rect", "line", "polyline"}:
            self.shapes.append(Shape(self._chart, tag, values, self._series))
        elif tag == "title" and self.shapes and self.shapes[-1].chart == self._chart and self._chart:
            self._in_title = self.shapes[-1]

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = ""
        elif tag == "g":
            self._series = ""
        elif tag == "title":
            self._in_title = None

    def handle_data(self, data: str) -> None:
        if self._in_title is not None:
            self._in_title.title += data

    def points(self, chart: str, series: str) -> dict[str, float]:
        """{hour label: value} of a line chart's series, read from the drawn circles."""
        return {s.title.split(" ")[0]: float(s.attrs["data-value"]) for s in self.shapes
                if s.chart == chart and s.tag == "circle" and s.series == series}

    def bars(self, chart: str) -> dict[str, Shape]:
        return {s.attrs["data-label"]: s for s in self.shapes if s.chart == chart and s.tag == "rect"}


@pytest.fixture
def staff_client(client: Client) -> Client:
    user = User.objects.create_user("pm", password="unused-in-tests", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.fixture
def hours_ago() -> Iterator[Any]:
    """A time `n` hours and `minutes` into the past, inside that whole hour (never in the future)."""
    now = timezone.now()
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)

    def at(n: int, minutes: float) -> datetime:
        return current - HOUR * n + timedelta(minutes=minutes)

    yield at


@pytest.fixture
def traffic(hours_ago: Any) -> dict[str, Any]:
    """Answers of several intents in several hours, with numbers a person can rank by hand."""
    faq_hour, question_hour, lonely_hour = hours_ago(3, 5), hours_ago(2, 5), hours_ago(5, 5)
    rows: list[dict[str, Any]] = []
    # 3 hours ago: 20 faq answers, first token 10, 20, ..., 200 ms; total 1,010 ... 1,200 ms.
    for i in range(1, 21):
        rows.append({"created_at": faq_hour + timedelta(minutes=i), "intent": "faq",
                     "previous_intent": "product_discovery", "first_token_ms": 10.0 * i, "total_ms": 1000.0 + 10 * i,
                     "prompt_tokens": 700, "raw_prompt_tokens": 1750, "compression_ratio": 0.4,
                     "prefetch_hit": i <= 5, "assembly_ms": 20.0})
    # 2 hours ago: 10 product questions, first token 300 ... 1,200 ms; big, barely compressed prompts.
    for i in range(1, 11):
        rows.append({"created_at": question_hour + timedelta(minutes=i), "intent": "product_question",
                     "previous_intent": "faq", "first_token_ms": 200.0 + 100 * i, "total_ms": 2000.0 + 100 * i,
                     "prompt_tokens": 2600, "raw_prompt_tokens": 2800, "compression_ratio": 0.8 if i % 2 else 1.0,
                     "prefetch_hit": i == 1, "assembly_ms": 40.0})
    # 5 hours ago: one answer; the hour between it and the faq hour has none (a gap in the line).
    rows.append({"created_at": lonely_hour, "intent": "chitchat", "first_token_ms": 250.0, "total_ms": 900.0,
                 "prompt_tokens": 150, "raw_prompt_tokens": 150, "compression_ratio": 1.0})
    records_create(rows)
    return {"faq": hour_label(faq_hour), "question": hour_label(question_hour), "lonely": hour_label(lonely_hour),
            "empty": hour_label(hours_ago(4, 5))}


class DashboardChartsTests:
    def test_latency_lines_are_drawn_at_the_hand_ranked_percentiles(self, staff_client: Client,
                                                                    traffic: dict[str, Any]) -> None:
        response = staff_client.get(DASHBOARD)
        assert response.status_code == 200
        shapes = SvgShapes(response.content.decode())
        faq, question, lonely = traffic["faq"], traffic["question"], traffic["lonely"]
        # Nearest rank: p95 of 20 values is the 19th, of 10 values the 10th; p50 of 20 is the 10th.
        assert shapes.points("first-token", "p95") == {lonely: 250.0, faq: 190.0, question: 1200.0}
        assert shapes.points("first-token", "p50") == {lonely: 250.0, faq: 100.0, question: 700.0}
        assert shapes.points("first-token", "p99") == {lonely: 250.0, faq: 200.0, question: 1200.0}
        assert shapes.points("total", "p95") == {lonely: 900.0, faq: 1190.0, question: 3000.0}
        assert traffic["empty"] not in shapes.points("first-token", "p95")
        # The hour without answers breaks the p95 line in two: the lonely hour, then faq + question.
        lines = [s for s in shapes.shapes if s.chart == "first-token" and s.tag == "polyline" and s.series == "p95"]
        assert [len(line.attrs["points"].split()) for line in lines] == [1, 2]
        body = response.content.decode()
        assert f"{faq} p95: 190 ms" in body  # the point's tooltip
        assert f"<th scope=\"row\">{faq}</th><td>20</td><td>100 ms</td><td>190 ms</td><td>200 ms</td>" in body
        alarm_lines = [s for s in shapes.shapes if s.chart == "first-token" and s.tag == "line"
                       and "ref-alarm" in s.attrs.get("class", "")]
        assert len(alarm_lines) == 1 and "alarm 500 ms" in body

    def test_prompt_tokens_histogram_compression_and_prefetch_bars(self, staff_client: Client,
                                                                   traffic: dict[str, Any]) -> None:
        shapes = SvgShapes(staff_client.get(DASHBOARD).content.decode())
        tokens = shapes.bars("prompt-tokens")
        assert float(tokens["601–800"].attrs["data-value"]) == 20
        assert float(tokens["2,501–3,000"].attrs["data-value"]) == 10
        assert float(tokens["101–200"].attrs["data-value"]) == 1
        assert sum(float(bar.attrs["data-value"]) for bar in tokens.values()) == 31
        assert "over" in tokens["2,501–3,000"].attrs["class"] and "over" not in tokens["601–800"].attrs["class"]

        ratios = shapes.bars("compression")
        assert float(ratios["faq"].attrs["data-value"]) == pytest.approx(0.4)
        assert float(ratios["product_question"].attrs["data-value"]) == pytest.approx(0.9)
        assert "over" in ratios["product_question"].attrs["class"]  # above the 0.85 alarm

        prefetch = shapes.bars("prefetch")
        assert set(prefetch) == {"product_discovery → faq", "faq → product_question"}
        assert float(prefetch["product_discovery → faq"].attrs["data-value"]) == pytest.approx(0.25)
        assert prefetch["faq → product_question"].title == "faq → product_question: 10 % of 10 lookups"
        assert "over" in prefetch["faq → product_question"].attrs["class"]  # below the 15 % alarm

    def test_every_chart_has_a_title_a_description_and_a_data_table(self, staff_client: Client,
                                                                    traffic: dict[str, Any]) -> None:
        body = staff_client.get(DASHBOARD).content.decode()
        for slug in ("first-token", "total", "prompt-tokens", "compression", "prefetch"):
            assert f'aria-labelledby="{slug}-svg-title {slug}-svg-desc"' in body
            assert f'<title id="{slug}-svg-title">' in body and f'<desc id="{slug}-svg-desc">' in body
        assert body.count("<summary>Data table:") == 5

    def test_a_wider_window_reaches_older_answers(self, staff_client: Client, hours_ago: Any) -> None:
        # Just before the 24-hour window's first hour: in every chart of the 72-hour view, in none of the 24-hour one.
        records_create([{"created_at": hours_ago(24, 30), "intent": "faq", "previous_intent": "faq",
                         "first_token_ms": 321.0, "prompt_tokens": 900, "compression_ratio": 0.5,
                         "prefetch_hit": True}])
        day = SvgShapes(staff_client.get(DASHBOARD).content.decode())
        assert day.points("first-token", "p95") == {}
        assert not any(float(bar.attrs["data-value"]) for bar in day.bars("prompt-tokens").values())
        assert day.bars("compression") == {} and day.bars("prefetch") == {}
        three_days = SvgShapes(staff_client.get(DASHBOARD + "?hours=72").content.decode())
        assert list(three_days.points("first-token", "p95").values()) == [321.0]
        assert float(three_days.bars("prompt-tokens")["801–1,000"].attrs["data-value"]) == 1
        assert set(three_days.bars("compression")) == {"faq"} and set(three_days.bars("prefetch")) == {"faq → faq"}

    def test_empty_store_renders_with_no_data(self, staff_client: Client) -> None:
        response = staff_client.get(DASHBOARD + "?hours=nonsense")
        body = response.content.decode()
        assert response.status_code == 200
        assert body.count("No answers in this window</text>") == 5
        assert body.count("ma-state-no_data") == 6 and "No answers yet." in body


class AlarmStateTests:
    def test_alarms_read_the_last_five_minutes_only(self, staff_client: Client, hours_ago: Any) -> None:
        now = timezone.now()
        recent = [{"created_at": now - timedelta(seconds=30 + i), "intent": "faq", "first_token_ms": ft,
                   "total_ms": 900.0, "prompt_tokens": 600, "compression_ratio": 0.5, "assembly_ms": 30.0}
                  for i, ft in enumerate((600.0, 700.0, 800.0))]
        # Ten minutes ago every answer was fast: it must not hide the slow ones of the last five minutes.
        old = [{"created_at": now - timedelta(minutes=10), "intent": "faq", "first_token_ms": 50.0}] * 50
        records_create(recent + old)
        body = staff_client.get(DASHBOARD).content.decode()
        rows = dict(_alarm_rows(body))
        assert _state(rows["first_token_latency"]) == "alarm" and "<td>800 ms</td>" in rows["first_token_latency"]
        assert _state(rows["total_latency"]) == "ok" and "<td>900 ms</td>" in rows["total_latency"]
        assert _state(rows["compression_ratio"]) == "ok"
        assert _state(rows["prefetch_hit_rate"]) == "no_data"  # 0 lookups is too few to judge a hit rate

    def test_prefetch_hit_rate_alarm_needs_enough_lookups(self, hours_ago: Any) -> None:
        now = timezone.now()
        records_create([{"created_at": now - timedelta(minutes=1), "intent": "faq", "prefetch_hit": i < 2}
                        for i in range(19)])
        state = {s.alarm.signal: s for s in dashboard_read(now=now, hours=6).alarms}["prefetch_hit_rate"]
        assert (state.state, state.samples) == ("no_data", 19)
        records_create([{"created_at": now - timedelta(minutes=1), "intent": "faq", "prefetch_hit": False}])
        state = {s.alarm.signal: s for s in dashboard_read(now=now, hours=6).alarms}["prefetch_hit_rate"]
        assert (state.state, state.value) == ("alarm", pytest.approx(2 / 20))


def _alarm_rows(body: str) -> list[tuple[str, str]]:
    """(signal, the row's HTML) of the alarm table."""
    rows = []
    for chunk in body.split('data-signal="')[1:]:
        signal, rest = chunk.split('"', 1)
        rows.append((signal, rest.split("</tr>", 1)[0]))
    return rows


def _state(row: str) -> str:
    return row.split('class="ma-state ma-state-', 1)[1].split('"', 1)[0]


class PercentileTests:
    def test_database_percentiles_match_a_sort_in_python(self, hours_ago: Any) -> None:
        rng = random.Random(20261129)
        rows = []
        for hour in range(2, 8):  # whole past hours: nothing in the future of `now`
            for _ in range(rng.randint(1, 60)):
                # Few distinct values: ties must not shift the ranks.
                rows.append({"created_at": hours_ago(hour, rng.uniform(0, 59)), "intent": "faq",
                             "first_token_ms": float(rng.choice(range(100, 1000, 50))),
                             "total_ms": rng.uniform(500, 3000) if rng.random() > 0.2 else None,
                             "prompt_tokens": rng.randint(1, 4000)})
        # The newest past hour's answers all failed before their end: first tokens to rank, no totals.
        rows += [{"created_at": hours_ago(1, 10 + i), "intent": "faq", "first_token_ms": 400.0 + i,
                  "total_ms": None, "prompt_tokens": 500} for i in range(3)]
        records_create(rows)
        now = timezone.now()
        data = dashboard_read(now=now, hours=9)
        failed_hour = hours_ago(1, 0)
        assert [(h.count, h.values) for h in data.total if h.start == failed_hour] == [(0, {})]
        assert [h.values[95] for h in data.first_token if h.start == failed_hour] == [402.0]
        for series, column in ((data.first_token, "first_token_ms"), (data.total, "total_ms")):
            for hour in series:
                values = [r[column] for r in rows if hour.start <= r["created_at"] < hour.start + HOUR
                          and r[column] is not None]
                expected = {p: nearest_rank(values, p) for p in (50, 95, 99)} if values else {}
                assert (hour.count, hour.values) == (len(values), expected)
        tokens = [r["prompt_tokens"] for r in rows]
        assert data.prompt_tokens.percentiles == {p: nearest_rank(tokens, p) for p in (50, 95, 99)}


class ThroughputPanelTests:
    def test_not_configured_without_a_throughput_selector(self, staff_client: Client,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "throughput.selectors", None)  # as if the module did not exist
        body = staff_client.get(DASHBOARD).content.decode()
        assert "not configured" in body.split('id="throughput-state"')[1].split("</dd>")[0]

    def test_shows_what_the_throughput_app_reports(self, staff_client: Client,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        @dataclass
        class State:
            status: str
            model_units: int

        module = types.ModuleType("throughput.selectors")
        module.throughput_state = lambda: State(status="InService", model_units=2)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "throughput.selectors", module)
        panel = staff_client.get(DASHBOARD).content.decode().split('id="throughput-state"')[1].split("</dd>")[0]
        assert "InService" in panel and "model units" in panel and "<td>2</td>" in panel

    def test_a_failing_throughput_app_does_not_take_the_dashboard_down(self, staff_client: Client,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        def broken() -> None:
            raise RuntimeError("control plane unreachable")

        module = types.ModuleType("throughput.selectors")
        module.throughput_state = broken  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "throughput.selectors", module)
        response = staff_client.get(DASHBOARD)
        assert response.status_code == 200 and "control plane unreachable" in response.content.decode()


class DashboardAccessTests:
    def test_dashboard_url_is_mounted_under_the_admin(self) -> None:
        assert reverse("admin_dashboard") == DASHBOARD

    def test_anonymous_is_sent_to_the_admin_login(self, client: Client, traffic: dict[str, Any]) -> None:
        response = client.get(DASHBOARD)
        assert response.status_code == 302 and response["Location"] == f"/admin/login/?next={DASHBOARD}"

    def test_logged_in_customer_without_staff_is_refused(self, client: Client, traffic: dict[str, Any]) -> None:
        client.force_login(User.objects.create_user("customer", password="unused-in-tests"))
        response = client.get(DASHBOARD)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
        assert b"<svg" not in response.content

    def test_admin_index_links_to_the_dashboard(self, staff_client: Client) -> None:
        assert f'href="{DASHBOARD}"' in staff_client.get("/admin/").content.decode()


class DashboardScaleTests:
    def test_query_count_is_bounded_with_100k_records(self, staff_client: Client, hours_ago: Any,
                                                      django_assert_max_num_queries: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        # The throughput panel's reads belong to the throughput app (and its tests): kept out of this count.
        module = types.ModuleType("throughput.selectors")
        module.throughput_state = lambda: {"status": "InService"}  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "throughput.selectors", module)
        # 3,125 distinct answers over the last day, doubled five times in SQL: 100,000 rows. (bulk_create
        # of all 100k takes about 7 s on SQLite, whose 999-parameter limit means batches of 43 rows.)
        rng = random.Random(7)
        intents = ["faq", "product_question", "recommendation", "product_discovery", "checkout_help"]
        records_create([
            # Hours 1-22 back: still inside the window if the clock passes an hour during the test.
            {"created_at": hours_ago(1 + i % 22, rng.uniform(0, 59)), "intent": rng.choice(intents),
             "previous_intent": rng.choice(intents), "first_token_ms": rng.uniform(150, 900),
             "total_ms": rng.uniform(500, 3000), "prompt_tokens": rng.randint(100, 3000), "raw_prompt_tokens": 3000,
             "compression_ratio": rng.random(), "assembly_ms": rng.uniform(5, 300), "prefetch_hit": rng.random() < 0.3}
            for i in range(3125)
        ])
        columns = ", ".join(connection.ops.quote_name(f.column) for f in TurnRecord._meta.concrete_fields
                            if not f.primary_key)
        table = connection.ops.quote_name(TurnRecord._meta.db_table)
        with connection.cursor() as cursor:
            for _ in range(5):
                cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}")
        assert TurnRecord.objects.count() == 100_000

        # Session, user and the admin's own reads, plus the dashboard's fixed set: not one per row or per hour.
        with django_assert_max_num_queries(20):
            response = staff_client.get(DASHBOARD)
        assert response.status_code == 200
        assert "(100,000 answers)" in response.content.decode()  # the prompt-token histogram saw them all
        points = SvgShapes(response.content.decode()).points("first-token", "p95")
        assert len(points) == 22  # every hour with answers has its point


@pytest.mark.postgres
class DashboardOnPostgresTests(DashboardScaleTests, PercentileTests):
    """The same 100k-row query count and ranks on PostgreSQL, the database of scaled mode (bin/test-postgres)."""


class TranscriptBreakdownTests:
    def test_conversation_admin_shows_each_answers_latency_breakdown(self, staff_client: Client,
                                                                     django_assert_max_num_queries: Any) -> None:
        conversation = Conversation.objects.create(session_key="s")
        for n in range(3):
            Turn.objects.create(conversation=conversation, role=Role.USER, client_message_id=f"q{n}", text="hi")
            answer = Turn.objects.create(conversation=conversation, role=Role.ASSISTANT, client_message_id=f"q{n}",
                                         text="hello")
            TurnRecord.objects.create(turn=answer, conversation=conversation, client_message_id=f"q{n}",
                                      status=TurnStatus.COMPLETE, first_token_ms=312.4 + n, total_ms=1204.0,
                                      prompt_tokens=812, raw_prompt_tokens=2100, assembly_ms=23.0,
                                      degraded_sources={"retrieval": "timeout"}, prefetch_hit=True,
                                      provider_cache_hit=False, route="provisioned", backend="bedrock",
                                      client_first_token_ms=340.0 + n if n else None, output_tokens=1200 + n)
        url = reverse("admin:chat_conversation_change", args=[conversation.pk])
        # 6 turns: a query per record would make it 9 or more.
        with django_assert_max_num_queries(5):
            body = staff_client.get(url).content.decode()
        assert ("First token: 312 ms (browser –)<br>Total: 1,204 ms<br>Output tokens: 1,200<br>"
                "Prompt tokens: 812 (raw 2,100)<br>Assembly: 23 ms") in body
        assert "Degraded sources: retrieval (timeout)<br>Prefetch: hit<br>Provider cache: miss" in body
        assert "First token: 314 ms (browser 342 ms)" in body and "Route: provisioned (bedrock)" in body
