"""The admin dashboard in a real browser (headless Chromium): a PM logs in and sees the charts drawn."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from chat.selectors_dashboard import HOUR
from tests.browser.chromium import chromium
from tests.chat.test_dashboard import records_create

ARTIFACT = Path(__file__).resolve().parent.parent.parent / "artifacts" / "dashboard.png"
PASSWORD = "browser-test-only-password"




@pytest.fixture
def browser() -> Iterator[Any]:
    """Per test: the data fixtures run before Playwright's event loop starts on this thread."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def dashboard_data(transactional_db: None) -> None:
    """A staff user and a day of answers of several intents (made before the browser's event loop starts)."""
    User.objects.create_user("pm", password=PASSWORD, is_staff=True, is_superuser=True)
    current = timezone.localtime(timezone.now()).replace(minute=0, second=0, microsecond=0)
    rows = []
    for hours_back in range(1, 7):
        for i in range(12):
            intent = ("faq", "product_question", "recommendation")[i % 3]
            rows.append({"created_at": current - HOUR * hours_back + timedelta(minutes=4 * i), "intent": intent,
                         "previous_intent": "product_discovery", "first_token_ms": 150.0 + 40 * i + 10 * hours_back,
                         "total_ms": 900.0 + 80 * i, "prompt_tokens": 300 + 200 * i, "raw_prompt_tokens": 3000,
                         "compression_ratio": 0.3 + 0.05 * (i % 3), "assembly_ms": 15.0 + i,
                         "prefetch_hit": i % 4 == 0})
    records_create(rows)


@pytest.fixture
def customer_session(transactional_db: None, dashboard_data: None) -> str:
    """The session cookie of a signed-in customer (not staff), with a day of answers to keep from them."""
    from django.test import Client

    customer = User.objects.create_user("customer", password=PASSWORD)
    client = Client()
    client.force_login(customer)
    return client.cookies["sessionid"].value


class DashboardBrowserTests:
    def test_staff_sees_the_charts_drawn_with_data(self, live_server: Any, dashboard_data: None,
                                                   browser: Any) -> None:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        failed: list[str] = []
        page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/dashboard/")
        page.fill("#id_username", "pm")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/dashboard/")

        # Five charts, each an accessible image with a name, each laid out at a real size.
        charts = page.locator("svg[data-chart]")
        assert charts.count() == 5
        for name in ("First-token latency", "Total latency", "Prompt tokens per answer",
                     "Compression ratio by intent", "Prefetch hit rate by transition"):
            image = page.get_by_role("img", name=name)
            assert image.count() == 1
            box = image.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100

        # The latency lines: six hours of points per percentile, joined by a drawn (styled) polyline.
        p95 = page.locator('svg[data-chart="first-token"] g[data-series="p95"]')
        assert p95.locator("circle").count() == 6
        drawn = p95.locator("polyline").first.evaluate(
            "line => ({length: line.getTotalLength(), dash: getComputedStyle(line).strokeDasharray})")
        assert drawn["length"] > 100 and drawn["dash"] == "6px, 3px"  # dashboard.css reached the browser

        # Histogram and bars: drawn with a height / width from the data.
        heights = page.locator('svg[data-chart="prompt-tokens"] rect.bar').evaluate_all(
            "bars => bars.map(bar => bar.getBBox().height)")
        assert sum(1 for height in heights if height > 0) >= 5
        widths = page.locator('svg[data-chart="compression"] rect.bar').evaluate_all(
            "bars => bars.map(bar => bar.getBBox().width)")
        assert len(widths) == 3 and all(width > 0 for width in widths)
        assert page.locator('svg[data-chart="prefetch"] rect.bar').count() == 3

        # The data table under a chart opens and holds the numbers.
        page.get_by_text("Data table: First-token latency").click()
        assert page.locator("#chart-first-token table tbody tr").count() == 24
        assert not failed, f"requests that failed: {failed}"

        ARTIFACT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACT), full_page=True)
        assert ARTIFACT.stat().st_size > 10_000

    def test_non_staff_is_refused_at_the_login_form_and_when_signed_in(self, live_server: Any,
                                                                       customer_session: str,
                                                                       browser: Any) -> None:
        page = browser.new_page()
        # The admin's login form does not let a customer in, whatever the password.
        page.goto(f"{live_server.url}/admin/login/?next=/admin/dashboard/")
        page.fill("#id_username", "customer")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_load_state()
        assert "/admin/login/" in page.url
        assert page.locator(".errornote").inner_text().startswith("Please enter the correct username and password")
        assert page.locator("svg[data-chart]").count() == 0

        # Signed in on the store (a session of their own): the dashboard sends them to the admin login.
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": customer_session, "url": live_server.url}])
        signed_in = context.new_page()
        response = signed_in.goto(f"{live_server.url}/admin/dashboard/")
        assert response is not None and response.ok
        assert signed_in.url == f"{live_server.url}/admin/login/?next=/admin/dashboard/"
        assert "not authorized to access this page" in signed_in.locator("#content").inner_text()
        assert signed_in.locator("svg[data-chart]").count() == 0
        assert "First-token latency" not in signed_in.content()
        context.close()
