"""The OpenAI-compatible backend against a local SSE server (the real wire, no mocks)."""

from __future__ import annotations

import time
from contextlib import aclosing

import pytest

from chat.llm.base import LLMRequest, LLMThrottled, LLMUnavailable, Message, Route, TextDelta, Usage
from chat.llm.openai import OpenAICompatibleBackend
from tests.conftest import open_chat
from tests.fakes.openai_sse import FakeOpenAIServer, SSEReply


def _request() -> LLMRequest:
    return LLMRequest(system="You are a store assistant.", stable_context="Summary: none",
                      volatile_context="Store data: Naruto, ¥616", messages=[Message("user", "Is Naruto in stock?")],
                      max_tokens=50, route=Route("openai", "smol"))


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    with FakeOpenAIServer() as fake:
        yield fake


class OpenAIBackendTests:
    async def test_streams_deltas_and_reports_usage_with_cached_tokens(self, server: FakeOpenAIServer) -> None:
        server.push(SSEReply(chunks=["Yes", ", in", " stock."], cached_tokens=30))
        events = [e async for e in OpenAICompatibleBackend(base_url=server.url, model="smol").stream(_request())]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Yes, in stock."
        usage = events[-1]
        assert isinstance(usage, Usage) and usage.cache_read_tokens == 30 and usage.cache_hit
        body = server.calls[0].body
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["messages"][0]["role"] == "system" and "Summary: none" in body["messages"][0]["content"]
        assert body["messages"][-1] == {"role": "user", "content": "Is Naruto in stock?"}

    async def test_429_is_throttled_with_retry_after(self, server: FakeOpenAIServer) -> None:
        server.push(SSEReply(status=429, retry_after="0.2"))
        with pytest.raises(LLMThrottled) as caught:
            [e async for e in OpenAICompatibleBackend(base_url=server.url).stream(_request())]
        assert caught.value.retry_after == 0.2

    async def test_cut_connection_is_an_error(self, server: FakeOpenAIServer) -> None:
        server.push(SSEReply(cut_after=2))
        with pytest.raises(Exception) as caught:
            [e async for e in OpenAICompatibleBackend(base_url=server.url).stream(_request())]
        assert "broke" in str(caught.value) or isinstance(caught.value, LLMUnavailable)

    async def test_closing_the_stream_closes_the_upstream_connection(self, server: FakeOpenAIServer) -> None:
        server.push(SSEReply(chunks=["a"] * 50, delay=0.05))
        backend = OpenAICompatibleBackend(base_url=server.url)
        async with aclosing(backend.stream(_request())) as events:
            async for _ in events:
                break
        closed_at = time.monotonic()
        server.wait_client_closed(server.calls[0])
        assert server.calls[0].client_closed_at - closed_at < 0.1
        assert server.calls[0].chunks_sent < 50

    async def test_unreachable_server_is_unavailable(self) -> None:
        with pytest.raises(LLMUnavailable):
            [e async for e in OpenAICompatibleBackend(base_url="http://127.0.0.1:9/v1").stream(_request())]


@pytest.mark.django_db(transaction=True)
class OpenAIEndToEndTests:
    async def test_store_chat_streams_through_the_openai_backend(self, demo_catalog: None, server: FakeOpenAIServer) -> None:
        from chat.consumers import ChatConsumer
        from chat.orchestrator import Orchestrator

        server.push(SSEReply(chunks=["**Naruto** is", " in stock", " at ¥616."]))
        ChatConsumer.orchestrator = Orchestrator(backend=OpenAICompatibleBackend(base_url=server.url, model="smol"))
        chat = await open_chat()
        frames = await chat.ask("Is Naruto in stock?", "o1")
        await chat.ws.disconnect()
        assert [f["type"] for f in frames] == ["ack", "delta", "delta", "delta", "completed"]
        completed = frames[-1]
        assert completed["text"] == "**Naruto** is in stock at ¥616."
        assert [p["title"] for p in completed["products"]] == ["Naruto"]
        assert completed["metrics"]["backend"] == "openai" and completed["metrics"]["prompt_tokens"] > 0
        prompt = server.calls[0].body["messages"][0]["content"]
        assert "Naruto" in prompt and "¥" in prompt  # the store data reached the model
