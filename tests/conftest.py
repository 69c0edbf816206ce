"""Shared fixtures: the demo catalog, the real ASGI app, a fast simulated model."""

from __future__ import annotations

import json
import os
from typing import Any, AsyncIterator, Iterator, NoReturn

import pytest
from channels.testing import WebsocketCommunicator
from django.core.cache import cache

# The ASGI app would warm the index on a thread at import; tests build it when they need it.
os.environ["MANGAASSIST_WARMUP"] = "false"

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture(autouse=True)
def _fresh_process_state(settings) -> None:  # type: ignore[no-untyped-def]
    """Each test starts with an empty cache, a rebuilt index and an instant simulated model.

    Its deltas are relayed one frame each (no coalescing), so tests can count them;
    tests/chat/test_coalescing.py checks the coalescing of a paced model.
    """
    from catalog.retrieval import index_holder
    from chat.consumers import ChatConsumer
    from chat.llm.simulated import SimulatedBackend
    from chat.orchestrator import Orchestrator
    from mangaassist.celery import in_process_wait

    settings.CHAT_DELTA_COALESCE_MS = 0
    cache.clear()
    index_holder.reset()
    ChatConsumer.orchestrator = Orchestrator(backend=SimulatedBackend(profile="instant", seed=7))
    yield
    in_process_wait()
    ChatConsumer.orchestrator = None
    index_holder.reset()


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose service or tool is missing, with the reason; under CI (CI=true) every test runs, so fail."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI runs every test)")
    pytest.skip(reason)


def require_service(service: str, url: str, port: int) -> None:
    """Skip (or, under CI, fail) where a service is unreachable."""
    from bench.stack import reachable

    if not reachable(url, port):
        skip_or_fail(f"needs {service} at {url}, which is not reachable")


SONNET = "anthropic.claude-3-5-sonnet-20241022-v2:0"


@pytest.fixture
def bedrock_runtime(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A local Bedrock Runtime (AWS event-stream wire) that boto3 talks to, as LLM_BACKEND=bedrock would."""
    from chat.llm import get_backend
    from tests.fakes.bedrock_runtime import FakeBedrockRuntime

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with FakeBedrockRuntime() as fake:
        settings.BEDROCK_ENDPOINT_URL = fake.url
        settings.BEDROCK_MODEL_ID = SONNET
        settings.LLM_BACKEND = "bedrock"
        get_backend.cache_clear()
        yield fake
    get_backend.cache_clear()


@pytest.fixture
def demo_catalog(transactional_db: None) -> None:
    from catalog.services import demo_catalog_load

    from store.services import demo_faq_load

    demo_catalog_load()
    demo_faq_load()
    _prompt_starting_values()
    # As a web process does before it reports ready: index, intent model, pool connections; the cache
    # left cold, as the prefetch accounting and the assembly's reads that tests check need it.
    from mangaassist.warmup import warm_up

    warm_up(store_cache=False)


def _prompt_starting_values() -> None:
    """What migration chat.0004 installs (transactional tests flush it away)."""
    from chat.models import IntentPromptConfig, PromptBudget
    from chat.prompt_config import DEFAULT_PAGE_FIELDS

    PromptBudget.objects.get_or_create(name="default", defaults={"active": True})
    for intent, fields in DEFAULT_PAGE_FIELDS.items():
        IntentPromptConfig.objects.get_or_create(intent=intent, defaults={"page_fields": fields})


class ChatClient:
    """A WebSocket client of the real ASGI application."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        return json.loads(await self.ws.receive_from(timeout=timeout))

    async def until(self, *types: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Frames up to and including the first of `types`."""
        frames = []
        while True:
            frame = await self.receive(timeout)
            frames.append(frame)
            if frame["type"] in types:
                return frames

    async def ask(self, text: str, message_id: str, **extra: Any) -> list[dict[str, Any]]:
        await self.send({"type": "message", "id": message_id, "text": text, **extra})
        return await self.until("completed", "error")


async def open_chat(path: str = "/ws/chat/", headers: list[tuple[bytes, bytes]] | None = None) -> ChatClient:
    from mangaassist.asgi import application

    communicator = WebsocketCommunicator(application, path, headers=headers if headers is not None else [ORIGIN])
    connected, _ = await communicator.connect()
    assert connected
    return ChatClient(communicator)


@pytest.fixture
async def chat(demo_catalog: None) -> AsyncIterator[ChatClient]:
    client = await open_chat()
    yield client
    await client.ws.disconnect()


async def saved_turns(expected: int, timeout: float = 3.0) -> list[tuple[str, str, str]]:
    """(role, status, message id) of every turn, once `expected` are saved.

    The answer is saved right after `completed` is sent (off the customer's wait).
    """
    import asyncio
    import time

    from asgiref.sync import sync_to_async

    from chat.models import Turn

    deadline = time.monotonic() + timeout
    while True:
        rows = await sync_to_async(lambda: list(Turn.objects.order_by("created_at", "id")
                                                .values_list("role", "status", "client_message_id")))()
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgres` tests run in the PostgreSQL pass (bin/test-postgres); the SQLite pass leaves them out."""
    from django.conf import settings

    on_postgres = "postgresql" in settings.DATABASES["default"]["ENGINE"]
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="runs in the PostgreSQL pass of make test (bin/test-postgres)"))
