"""The chat widget in a real browser (headless Chromium) against real daphne processes.

The chat needs WebSockets, so these tests do not use pytest-django's live_server: they
start daphne in embedded mode on a prepared SQLite file, with the simulated model at a
Bedrock-like pace (an answer lasts a few seconds, so a stop, a reload or a cut connection
lands mid-answer). tests/scaled/test_widget_scaled.py kills and restarts a web process in
scaled mode with the same helpers.

Each test opens its own browser context (its own session cookie and sessionStorage). An
init script timestamps every frame the page receives and sends, so the tests see what the
socket delivered and when the widget painted it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from bench.stack import free_port
from tests.browser.chromium import chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
QUESTION = "Recommend a shonen manga like Dragon Ball"
# The simulated model at a Bedrock-like pace, but decoding 20 ms per token instead of 5: an answer
# lasts a few seconds, so a reload, a stop or a killed process reliably lands mid-answer.
PACED = {"LLM_BACKEND": "simulated", "LLM_SIMULATED_PROFILE": "bedrock", "LLM_SIM_DECODE_MS_PER_TOKEN": "20",
         # Context deadlines a busy 2-core test machine never misses: the simulated model then writes the same
         # answer each time, so a continued answer can be compared with the whole one.
         **{f"ASSEMBLY_DEADLINE_{source}": "3" for source in
            ("MEMORY", "MEMORY_REFERENCE", "RETRIEVAL", "STORE", "PREFETCH", "ESSENTIAL")}}

# Timestamps each frame at the socket, before the widget's handler runs; `painted` is the next
# animation frame after the handler updated the DOM. Also keeps the frames the page sends.
FRAME_TIMING = """
(() => {
  const frames = [];
  Object.defineProperty(window, "__frames", { value: frames });
  const answerNode = (id) => {
    const host = document.getElementById("mangaassist-widget");
    return id && host ? host.shadowRoot.querySelector(`.assistant[data-id="${CSS.escape(id)}"]`) : null;
  };
  const listen = WebSocket.prototype.addEventListener;
  WebSocket.prototype.addEventListener = function (type, listener, options) {
    if (type !== "message" || typeof listener !== "function") return listen.call(this, type, listener, options);
    return listen.call(this, type, function (event) {
      const received = performance.now();
      let frame = null;
      try { frame = JSON.parse(event.data); } catch (error) { /* not ours */ }
      const result = listener.call(this, event);
      if (frame) {
        const node = answerNode(frame.id);
        const record = { dir: "in", type: frame.type, id: frame.id ?? null, index: frame.index ?? null,
          text: frame.text ?? null, code: frame.code ?? null, conversation: frame.conversation ?? null,
          received, handled: performance.now(), painted: null,
          state: node ? node.dataset.state : null,
          shown: node ? node.querySelector(".body").textContent.length : null };
        frames.push(record);
        requestAnimationFrame(() => { record.painted = performance.now(); });
      }
      return result;
    }, options);
  };
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { frames.push({ dir: "out", at: performance.now(), ...JSON.parse(data) }); } catch (error) { /* not ours */ }
    return send.call(this, data);
  };
})();
"""

LAST_ANSWER = """() => {
  const host = document.getElementById("mangaassist-widget");
  const node = host && [...host.shadowRoot.querySelectorAll(".assistant")].pop();
  return node ? { id: node.dataset.id, state: node.dataset.state, shown: node.querySelector(".body").textContent } : null;
}"""

FOCUSED = """() => {
  const host = document.getElementById("mangaassist-widget");
  if (document.activeElement !== host) return null;
  const focused = host.shadowRoot.activeElement;
  return focused ? (focused.id || focused.className || focused.localName) : null;
}"""



# --- Processes -------------------------------------------------------------------------------

@dataclass
class WebProcesses:
    """Daphne processes (and manage.py commands) sharing one environment."""

    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                       capture_output=True, text=True, timeout=300)

    def start(self, name: str, *, port: int | None = None, extra_env: dict[str, str] | None = None) -> str:
        """Start daphne and wait for /healthz 200 (warmed up); returns its base URL."""
        port = port or free_port()
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "mangaassist.asgi:application"],
            cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                break
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start: {(self.logs / f'{name}.log').read_text()[-3000:]}")

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to finish or save anything (a crash, an OOM kill)."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()


def _base_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"MANGAASSIST_WARMUP", "REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    return {**env, **PACED, "PYTHONUNBUFFERED": "1", "CHAT_RATE_LIMIT_PER_IP": "1000", **overrides}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcesses]:
    """Embedded mode on a SQLite file prepared as `make run` does."""
    directory = tmp_path_factory.mktemp("widget-embedded")
    processes = WebProcesses(env=_base_env(SQLITE_PATH=str(directory / "db.sqlite3")), logs=directory)
    processes.manage("migrate", "--noinput")
    processes.manage("load_demo_catalog")
    processes.manage("load_demo_store")
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def store(embedded: WebProcesses) -> str:
    return embedded.start("web")


# --- The browser -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """Pages in a fresh context each (a new browser session); page errors fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(**context_options: Any) -> Any:
        context = browser.new_context(**({"viewport": {"width": 1280, "height": 860}} | context_options))
        context.add_init_script(FRAME_TIMING)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"


class Chat:
    """What a customer sees and does, through the widget's accessible controls."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base

    def open_store(self, path: str = "/") -> "Chat":
        self.page.goto(self.base + path)
        self.page.locator("#mangaassist-widget").wait_for(state="attached")
        return self

    def open_panel(self) -> None:
        self.page.get_by_role("button", name="Open MangaAssist chat").click()
        self.page.get_by_role("dialog", name="MangaAssist").wait_for()

    def ask(self, text: str) -> None:
        box = self.page.get_by_role("textbox", name="Message MangaAssist")
        box.fill(text)
        box.press("Enter")

    def last_answer(self) -> dict[str, Any]:
        return self.page.evaluate(LAST_ANSWER)

    def wait_streaming(self, at_least: int = 40) -> dict[str, Any]:
        """Until the last answer is painted with `at_least` characters and is still streaming."""
        self.page.wait_for_function(
            """(least) => { const host = document.getElementById("mangaassist-widget");
               const node = host && [...host.shadowRoot.querySelectorAll(".assistant")].pop();
               return node && node.dataset.state === "streaming" && node.querySelector(".body").textContent.length >= least; }""",
            arg=at_least, polling="raf")
        return self.last_answer()

    def wait_answer(self, state: str = "completed", timeout: float = 30_000) -> dict[str, Any]:
        self.page.wait_for_function(
            """(state) => { const host = document.getElementById("mangaassist-widget");
               const node = host && [...host.shadowRoot.querySelectorAll(".assistant")].pop();
               return node && node.dataset.state === state; }""", arg=state, timeout=timeout)
        return self.last_answer()

    def transcript(self) -> list[dict[str, Any]]:
        return self.page.evaluate("MangaAssist.transcript()")

    def answer(self, message_id: str) -> dict[str, Any]:
        return next(entry for entry in self.transcript() if entry["role"] == "assistant" and entry["id"] == message_id)

    def frames(self) -> list[dict[str, Any]]:
        return self.page.evaluate("window.__frames")

    def conversation(self) -> str | None:
        return self.page.evaluate("JSON.parse(sessionStorage.getItem('mangaassist.conversation'))")

    def saved_turns(self) -> list[dict[str, Any]]:
        """The server's transcript for this browser session (GET /chat/conversations/<uuid>/)."""
        url = f"{self.base}/chat/conversations/{self.conversation()}/"
        return self.page.evaluate("async (url) => (await (await fetch(url, {credentials: 'include'})).json()).turns", url)

    def saved_answer(self, message_id: str, *, timeout: float = 10) -> dict[str, Any]:
        """The saved answer, once the server has written it (right after its final frame)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.saved_turns() if t["role"] == "assistant" and t["id"] == message_id]
            if found or time.monotonic() > deadline:
                assert found, f"answer {message_id} was never saved"
                return found[0]
            time.sleep(0.1)

    def focused(self) -> str | None:
        return self.page.evaluate(FOCUSED)


def _delta_indexes(frames: list[dict[str, Any]], message_id: str) -> list[int]:
    return [f["index"] for f in frames if f["dir"] == "in" and f["type"] == "delta" and f["id"] == message_id]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --- Embedded mode ------------------------------------------------------------------------------

class WidgetStreamingTests:
    def test_tokens_are_painted_as_they_arrive_then_cards_link_to_the_products(
            self, store: str, new_page: Any, capsys: pytest.CaptureFixture[str]) -> None:
        page = new_page()
        chat = Chat(page, store).open_store()
        chat.open_panel()
        assert chat.focused() == "ma-input"  # focus goes to the input when the panel opens
        assert page.get_by_text("Simulated answers", exact=False).is_visible()  # data-backend="simulated"
        chat.ask(QUESTION)
        answer = chat.wait_answer("completed")
        frames = chat.frames()

        # Tokens were painted one delta at a time, long before `completed`.
        completed = next(f for f in frames if f["dir"] == "in" and f["type"] == "completed")
        deltas = [f for f in frames if f["dir"] == "in" and f["type"] == "delta" and f["id"] == answer["id"]]
        assert [d["index"] for d in deltas] == list(range(len(deltas))) and len(deltas) > 20
        streaming = [d for d in deltas if d["state"] == "streaming" and d["handled"] < completed["received"]]
        assert len(streaming) == len(deltas)  # each delta was in the DOM before the answer was complete
        shown = [d["shown"] for d in deltas]
        assert shown == sorted(shown) and shown[0] > 0 and len(set(shown)) > 20  # the text grew as it came
        assert completed["received"] - deltas[0]["received"] > 300  # seen streaming, not all at once

        # Model text was rendered from the safe Markdown subset: bold and a numbered list, as elements.
        body = page.locator(f'.assistant[data-id="{answer["id"]}"] .body')
        assert body.locator("strong").count() >= 3 and body.locator("ol > li").count() == 3
        assert "**" not in answer["shown"]
        streamed = chat.answer(answer["id"])
        assert streamed["text"] == chat.saved_answer(answer["id"])["text"] and not streamed["repaired"]

        # Product cards: title, authors, a cover placeholder, price in yen, stock, a link to the product page.
        cards = page.locator(f'.assistant[data-id="{answer["id"]}"] .cards a.card')
        assert cards.count() >= 1
        first = cards.first
        href = first.get_attribute("href")
        assert href.startswith(store + "/products/") and href.endswith("/")
        assert first.locator(".title").inner_text() and first.locator(".authors").inner_text()
        assert first.locator(".cover").is_visible()
        assert first.locator(".price").inner_text().startswith("¥")
        assert first.locator(".stock, .sold-out").inner_text() in {"In stock", "Out of stock"}

        # The browser's own timings went back to the server.
        metrics = [f for f in frames if f["dir"] == "out" and f["type"] == "client_metrics"]
        assert len(metrics) == 1 and metrics[0]["id"] == answer["id"]
        assert 0 < metrics[0]["first_token_ms"] <= metrics[0]["total_ms"]

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget-desktop.png"))

        # Delta frame at the socket -> text painted (the animation frame after the DOM update). Reported only.
        page.wait_for_timeout(100)
        frames = chat.frames()
        latencies = [f["painted"] - f["received"] for f in frames
                     if f["dir"] == "in" and f["type"] == "delta" and f["painted"] is not None]
        handling = [f["handled"] - f["received"] for f in frames if f["dir"] == "in" and f["type"] == "delta"]
        first_delta = next(f for f in frames if f["dir"] == "in" and f["type"] == "delta" and f["id"] == answer["id"])
        report = {"first_token_socket_to_paint_ms": round(first_delta["painted"] - first_delta["received"], 2),
                  "target_ms": 50, "deltas": len(latencies), "socket_to_paint_ms": {
            "p50": round(statistics.median(latencies), 2), "p95": round(_percentile(latencies, 0.95), 2),
            "max": round(max(latencies), 2)},
            "handler_ms": {"p50": round(statistics.median(handling), 3), "max": round(max(handling), 3)},
            "first_token_ms_browser": metrics[0]["first_token_ms"], "total_ms_browser": metrics[0]["total_ms"]}
        (ARTIFACTS / "widget-paint-latency.json").write_text(json.dumps(report, indent=2))
        with capsys.disabled():
            print(f"\nwidget paint latency (delta frame at the socket -> painted): {json.dumps(report)}")

        # Following a card: the next page restores the conversation, its cards included.
        first.click()
        page.wait_for_url(href)
        page.locator(f'.assistant[data-id="{answer["id"]}"][data-state="completed"] .cards a.card').first.wait_for()
        assert page.get_by_role("dialog", name="MangaAssist").is_visible()

    def test_model_text_is_only_ever_text(self, store: str, new_page: Any) -> None:
        """Hostile model output through a mocked socket: markup and a javascript: link are shown, never run."""
        page = new_page()
        pieces = ['Try <img src=x onerror="window.__pwned=1">', " **One", " Piece**", "\n\n1. <b>first</b>",
                  "\n2. second\n- ", "<script>window.__pwned=2</script>"]

        def fake_server(ws: Any) -> None:
            def answer(message: str) -> None:
                frame = json.loads(message)
                if frame["type"] != "message":
                    return
                ws.send(json.dumps({"type": "ack", "id": frame["id"], "conversation": "00000000-0000-4000-8000-000000000000"}))
                ws.send(json.dumps({"type": "keepalive"}))
                ws.send(json.dumps({"type": "something_new", "id": frame["id"]}))  # unknown frames are ignored
                for index, text in enumerate(pieces):
                    ws.send(json.dumps({"type": "delta", "id": frame["id"], "index": index, "text": text}))
                ws.send(json.dumps({"type": "completed", "id": frame["id"], "text": "".join(pieces), "metrics": {},
                                    "products": [{"sku": "X1", "title": "<i>Evil</i>", "authors": ["<b>A</b>"],
                                                  "price": 500, "in_stock": True, "url": "javascript:window.__pwned=3"}]}))

            ws.on_message(answer)

        page.route_web_socket("**/ws/chat/**", fake_server)
        chat = Chat(page, store).open_store()
        chat.open_panel()
        chat.ask("Hello")
        answer = chat.wait_answer("completed")
        assert page.evaluate("window.__pwned") is None
        body = page.locator(f'.assistant[data-id="{answer["id"]}"] .body')
        assert body.locator("img, script, b, i").count() == 0
        assert '<img src=x onerror="window.__pwned=1">' in answer["shown"] and "<script>" in answer["shown"]
        assert body.locator("strong").inner_text() == "One Piece"
        assert body.locator("ol > li").all_inner_texts() == ["<b>first</b>", "second"]
        assert body.locator("ul > li").all_inner_texts() == ["<script>window.__pwned=2</script>"]
        card = page.locator(".cards .card")
        assert card.locator(".title").inner_text() == "<i>Evil</i>" and page.locator(".cards a").count() == 0
        page.locator(".cards .card").click()
        assert page.evaluate("window.__pwned") is None

    def test_stop_mid_answer_keeps_what_was_said(self, store: str, new_page: Any) -> None:
        page = new_page()
        chat = Chat(page, store).open_store()
        chat.open_panel()
        chat.ask(QUESTION)
        streaming = chat.wait_streaming(at_least=30)
        # The conversation is a live region; the answer being written is busy (read once it is done).
        assert page.get_by_role("log", name="Conversation").get_attribute("aria-live") == "polite"
        assert page.locator(f'.assistant[data-id="{streaming["id"]}"]').get_attribute("aria-busy") == "true"
        page.get_by_role("button", name="Stop generating").click()
        stopped = chat.wait_answer("stopped")
        assert page.locator(f'.assistant[data-id="{stopped["id"]}"]').get_attribute("aria-busy") == "false"
        assert page.locator(f'.assistant[data-id="{stopped["id"]}"] .tag').inner_text() == "Stopped"
        frames = chat.frames()
        assert [f["id"] for f in frames if f["dir"] == "out" and f["type"] == "stop"] == [stopped["id"]]
        assert not [f for f in frames if f["dir"] == "in" and f["type"] == "completed"]
        page.wait_for_timeout(500)
        assert chat.last_answer()["shown"] == stopped["shown"]  # nothing more arrives
        saved = chat.saved_answer(stopped["id"])
        assert saved["status"] == "partial"
        # Every delta the server counted reached the screen (the last ones may cross the stop).
        assert chat.answer(stopped["id"])["text"].startswith(saved["text"]) and saved["text"]
        assert page.get_by_role("button", name="Stop generating").is_hidden()
        chat.ask("Recommend a seinen manga")  # the conversation goes on
        chat.wait_answer("completed")

    def test_reload_mid_answer_resumes_with_the_text_intact(self, store: str, new_page: Any) -> None:
        page = new_page()
        chat = Chat(page, store).open_store()
        chat.open_panel()
        chat.ask(QUESTION)
        before = chat.wait_streaming(at_least=40)
        page.reload()

        # The restored page resumes the same answer right after the last delta painted before the reload.
        page.locator(f'.assistant[data-id="{before["id"]}"]').wait_for()
        completed = chat.wait_answer("completed")
        assert completed["id"] == before["id"]
        frames = chat.frames()
        resumes = [f for f in frames if f["dir"] == "out" and f["type"] == "resume"]
        assert len(resumes) == 1 and resumes[0]["id"] == before["id"]
        after = resumes[0]["after"]
        assert after >= 0
        indexes = _delta_indexes(frames, before["id"])
        assert indexes == list(range(after + 1, after + 1 + len(indexes))) and len(indexes) > 10  # live, no gap

        # The text is the server's answer exactly: nothing doubled at the seam, nothing missing.
        saved = chat.saved_answer(before["id"])
        resumed = chat.answer(before["id"])
        assert saved["status"] == "complete" and resumed["text"] == saved["text"] and not resumed["repaired"]
        assert [(e["role"], e["id"]) for e in chat.transcript() if e["role"] == "assistant"] == [("assistant", before["id"])]
        assert page.locator(".msg.user").count() == 1
        # The painted text is what a fresh page draws from the saved transcript.
        shown = page.locator(f'.assistant[data-id="{before["id"]}"] .body').inner_text()
        page.reload()
        restored = page.locator(f'.assistant[data-id="{before["id"]}"][data-state="completed"] .body')
        restored.wait_for()
        assert restored.inner_text() == shown

    def test_too_long_message_is_refused_inline_and_edited_and_resent(self, store: str, new_page: Any) -> None:
        page = new_page()
        chat = Chat(page, store).open_store()
        chat.open_panel()
        box = page.get_by_role("textbox", name="Message MangaAssist")
        box.fill("a" * 2001)
        assert "1 over the limit" in page.locator("#ma-counter").inner_text()
        assert box.get_attribute("aria-invalid") == "true"
        assert page.get_by_role("button", name="Send").is_disabled()
        box.press("Enter")
        assert page.locator(".msg.user").count() == 0  # the counter's limit holds in the UI

        # Past the UI (as a script could): the server refuses it, and the fix is offered inline.
        page.evaluate("MangaAssist.send('b'.repeat(2001))")
        error = page.locator('.msg.error[data-code="too_long"]')
        error.wait_for()
        assert "2000" in error.inner_text()
        error.get_by_role("button", name="Edit message").click()
        assert box.input_value() == "b" * 2001 and chat.focused() == "ma-input"
        box.fill("Recommend a seinen manga")
        box.press("Enter")
        chat.wait_answer("completed")
        assert page.locator(".msg.error").count() == 0

    def test_rate_limited_message_counts_down_then_retries(self, embedded: WebProcesses, new_page: Any) -> None:
        base = embedded.start("rate-limited", extra_env={
            "CHAT_RATE_LIMIT_PER_CONNECTION": "2", "CHAT_RATE_LIMIT_WINDOW_SECONDS": "4",
            "LLM_SIMULATED_PROFILE": "instant"})
        try:
            page = new_page()
            chat = Chat(page, base).open_store()
            chat.open_panel()
            for question in ("Hello", "Recommend a seinen manga"):
                chat.ask(question)
                chat.wait_answer("completed")
            chat.ask("Is One Piece in stock?")
            error = page.locator('.msg.error[data-code="rate_limited"]')
            error.wait_for()
            retry = error.get_by_role("button")
            assert retry.is_disabled() and retry.inner_text().startswith("Retry in ")
            page.wait_for_function("""() => { const host = document.getElementById("mangaassist-widget");
                const button = host.shadowRoot.querySelector('.msg.error[data-code="rate_limited"] button');
                return button && !button.disabled; }""", timeout=10_000)
            assert retry.inner_text() == "Retry"
            retry.click()
            answer = chat.wait_answer("completed")
            assert page.locator(".msg.error").count() == 0
            sent = [f for f in chat.frames() if f["dir"] == "out" and f["type"] == "message"]
            assert sent[-1]["text"] == "Is One Piece in stock?" and sent[-1]["id"] == answer["id"]
            assert page.locator(".msg.user").count() == 3  # the retry did not repeat the question
        finally:
            process = embedded.processes.pop("rate-limited")
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)

    def test_keyboard_only(self, store: str, new_page: Any) -> None:
        page = new_page()
        chat = Chat(page, store).open_store()
        product = page.locator(".product-tile a").first.get_attribute("href")
        chat.open_store(product)
        for _ in range(60):  # Tab through the page to the launcher
            page.keyboard.press("Tab")
            if chat.focused() == "launcher":
                break
        assert chat.focused() == "launcher"
        page.keyboard.press("Enter")
        assert page.get_by_role("dialog", name="MangaAssist").is_visible() and chat.focused() == "ma-input"

        page.keyboard.type("Is it in stock")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("and how much?")
        box = page.get_by_role("textbox", name="Message MangaAssist")
        assert box.input_value() == "Is it in stock\nand how much?" and page.locator(".msg.user").count() == 0
        page.keyboard.press("Control+A")
        page.keyboard.type(QUESTION)
        page.keyboard.press("Enter")
        chat.wait_streaming(at_least=10)
        page.keyboard.press("Tab")  # the Stop button is next to the input while an answer streams
        assert chat.focused() == "stop"
        page.keyboard.press("Enter")
        chat.wait_answer("stopped")
        assert chat.focused() == "ma-input"  # the Stop button went away; focus did not fall to the page

        page.keyboard.type("Tell me about it")
        page.keyboard.press("Enter")
        chat.wait_answer("completed")
        if page.locator(".cards a.card").count():
            page.keyboard.press("Shift+Tab")  # back from the input to the last product card
            assert chat.focused() == "card"
        page.keyboard.press("Escape")
        assert page.get_by_role("dialog", name="MangaAssist").is_hidden()
        assert chat.focused() == "launcher"  # Escape closes and returns focus to the launcher
        page.keyboard.press("Enter")
        assert chat.focused() == "ma-input"

    def test_narrow_mobile_viewport_gets_a_full_screen_panel(self, store: str, new_page: Any) -> None:
        page = new_page(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True, device_scale_factor=2)
        chat = Chat(page, store).open_store()
        page.get_by_role("button", name="Open MangaAssist chat").tap()
        dialog = page.get_by_role("dialog", name="MangaAssist")
        box = dialog.bounding_box()
        assert box == {"x": 0, "y": 0, "width": 375, "height": 667}
        chat.ask("Recommend a josei manga")
        chat.wait_answer("completed")
        message = page.locator(".assistant").last.bounding_box()
        assert message["x"] >= 0 and message["x"] + message["width"] <= 375  # nothing runs off the screen
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget-mobile.png"))
        page.get_by_role("button", name="Close chat").tap()
        assert dialog.is_hidden() and page.get_by_role("button", name="Open MangaAssist chat").is_visible()


# --- A network between the browser and the web process ---------------------------------------------

class TcpSwitch:
    """One port in front of the web processes, as a load balancer: new connections go to the process
    `route_to` names; `cut=True` also drops every open connection (both ends see the socket die)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target: int | None = None
        self.open: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", self.port), self.loop).result(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route_to(self, base: str | None, *, cut: bool = False) -> None:
        """New connections go to `base` (None: refused, as a load balancer with no ready process)."""
        self.target = urlparse(base).port if base else None
        if cut:
            asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(5)

    async def _cut(self) -> None:
        for writer in list(self.open):
            writer.transport.abort()
        self.open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.target is None:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.open |= {writer, upstream}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))
        except asyncio.CancelledError:
            writer.transport.abort()  # the switch is closing: end quietly (a cancelled handler is logged as an error)
            upstream.transport.abort()
        self.open -= {writer, upstream}

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            await self._cut()
            relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


HOSTILE_PAGE_CSS = """
* { font-family: "Comic Sans MS", cursive !important; color: #0f0 !important; background: #f0f !important;
    letter-spacing: 4px !important; }
div, section, button, textarea, form, p, ul, li, a { display: none !important; }
#mangaassist-widget, mangaassist-chat { display: none !important; transform: scale(0.1) !important; }
"""

WIDGET_STYLES = """() => {
  const root = document.getElementById("mangaassist-widget").shadowRoot;
  const style = (selector) => {
    const node = root.querySelector(selector);
    const computed = getComputedStyle(node);
    const box = node.getBoundingClientRect();
    return { display: computed.display, color: computed.color, background: computed.backgroundColor,
             font: computed.fontFamily, spacing: computed.letterSpacing, width: Math.round(box.width),
             height: Math.round(box.height), x: Math.round(box.x), y: Math.round(box.y) };
  };
  return { launcher: style(".launcher"), panel: style(".panel"), input: style("textarea"), log: style(".log"),
           send: style(".send") };
}"""


class WidgetRecoveryTests:
    def test_dropped_connection_reconnects_and_the_answer_continues_intact(self, store: str, new_page: Any) -> None:
        switch = TcpSwitch()
        switch.route_to(store)
        try:
            page = new_page()
            chat = Chat(page, switch.url).open_store()
            chat.open_panel()
            chat.ask(QUESTION)
            before = chat.wait_streaming(at_least=40)

            switch.route_to(store, cut=True)  # the connection drops: the server cancels the answer, saves it partial
            page.wait_for_function("""() => window.__frames.some(f => f.dir === "out" && f.type === "resume")""")
            completed = chat.wait_answer("completed")
            assert completed["id"] == before["id"]
            assert page.locator("#mangaassist-widget").get_attribute("data-connection") == "connected"

            frames = chat.frames()
            resume = next(f for f in frames if f["dir"] == "out" and f["type"] == "resume")
            assert resume["id"] == before["id"] and resume["after"] >= len(before["shown"]) // 20
            painted = "".join(f["text"] for f in frames if f["dir"] == "in" and f["type"] == "delta"
                              and f["id"] == before["id"] and f["index"] <= resume["after"])
            assert resume["chars"] == len(painted)  # what it had, in code points as the server counts
            # Every delta arrived once, in order, across the seam; the text is the saved answer, unrepaired.
            assert _delta_indexes(frames, before["id"]) == list(range(len(_delta_indexes(frames, before["id"]))))
            saved = chat.saved_answer(before["id"])
            shown = chat.answer(before["id"])
            assert saved["status"] == "complete" and shown["text"] == saved["text"] and not shown["repaired"]
            assert page.locator(".msg.assistant").count() == 1 and page.locator(".msg.error").count() == 0
        finally:
            switch.close()

    def test_upstream_error_is_shown_inline_and_retried(self, store: str, new_page: Any) -> None:
        """The socket is mocked at the wire: the first message fails upstream, the retry is answered."""
        page = new_page()
        asked: list[dict[str, Any]] = []

        def fake_server(ws: Any) -> None:
            def answer(message: str) -> None:
                frame = json.loads(message)
                if frame["type"] != "message":
                    return
                asked.append(frame)
                ws.send(json.dumps({"type": "ack", "id": frame["id"], "conversation": "00000000-0000-4000-8000-000000000001"}))
                if len(asked) == 1:
                    ws.send(json.dumps({"type": "error", "id": frame["id"], "code": "upstream_unavailable",
                                        "message": "The assistant is unavailable right now. Please try again in a moment."}))
                    return
                for index, text in enumerate(["Here ", "it ", "is."]):
                    ws.send(json.dumps({"type": "delta", "id": frame["id"], "index": index, "text": text}))
                ws.send(json.dumps({"type": "completed", "id": frame["id"], "text": "Here it is.", "products": [],
                                    "metrics": {}}))

            ws.on_message(answer)

        page.route_web_socket("**/ws/chat/**", fake_server)
        chat = Chat(page, store).open_store()
        chat.open_panel()
        chat.ask("Is Frieren in stock?")
        error = page.locator('.msg.error[data-code="upstream_unavailable"]')
        error.wait_for()
        assert "unavailable" in error.inner_text() and page.locator(".msg.assistant").count() == 0
        error.get_by_role("button", name="Retry").click()
        answer = chat.wait_answer("completed")
        assert answer["shown"] == "Here it is." and page.locator(".msg.error").count() == 0
        assert [a["text"] for a in asked] == ["Is Frieren in stock?"] * 2 and asked[0]["id"] != asked[1]["id"]
        assert page.locator(".msg.user").count() == 1  # the retry did not repeat the question
        assert chat.focused() == "ma-input"

    def test_host_page_styles_do_not_reach_the_widget(self, store: str, new_page: Any) -> None:
        page = new_page()
        Chat(page, store).open_store().open_panel()
        clean = page.evaluate(WIDGET_STYLES)
        page.add_style_tag(content=HOSTILE_PAGE_CSS)
        assert page.locator(".product-grid").is_hidden()  # the rules do apply to the page itself
        assert page.evaluate(WIDGET_STYLES) == clean
        assert page.get_by_role("button", name="Close chat").is_visible()
