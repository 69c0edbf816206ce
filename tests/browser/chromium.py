"""Debian's Chromium driven by Playwright, shared by the browser tests (widget, dashboard, scaled widget).

A test tool's own browser download fails here (no internet), so Playwright launches
/usr/bin/chromium headless; where it (or Playwright) is missing, the tests are skipped, or
fail under CI, which installs it (.ci/run).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium for the fixtures of the browser tests (each picks its own scope: Playwright's
    sync API runs an event loop on this thread for as long as the browser is open)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright==1.65.2; no `playwright install` needed)")
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
