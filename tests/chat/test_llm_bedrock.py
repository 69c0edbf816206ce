"""The Bedrock backend through the real socket, boto3 against a local event-stream server."""

from __future__ import annotations

import asyncio
import time
from threading import Event

import pytest
from asgiref.sync import sync_to_async

from chat.consumers import ChatConsumer
from chat.llm.bedrock import BedrockBackend
from chat.models import Role, Turn, TurnStatus
from chat.orchestrator import Orchestrator
from tests.conftest import SONNET, open_chat, saved_turns
from tests.fakes.bedrock_runtime import FakeBedrockRuntime, Reply

pytestmark = pytest.mark.django_db(transaction=True)

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
def bedrock(bedrock_runtime: FakeBedrockRuntime) -> FakeBedrockRuntime:
    return bedrock_runtime


def _use(api: str = "converse") -> None:
    ChatConsumer.orchestrator = Orchestrator(backend=BedrockBackend(api=api))


async def _answer(message_id: str) -> Turn:
    await saved_turns(2)
    return await sync_to_async(Turn.objects.get)(role=Role.ASSISTANT, client_message_id=message_id)


class BedrockStreamingTests:
    @pytest.mark.parametrize("api", ["converse", "invoke"])
    async def test_answer_streams_end_to_end(self, demo_catalog: None, bedrock: FakeBedrockRuntime, api: str) -> None:
        _use(api)
        bedrock.push(Reply(chunks=["**Naruto**", " is in", " stock."], input_tokens=420, cache_read_tokens=300))
        chat = await open_chat()
        frames = await chat.ask("Is Naruto in stock?", "b1")
        await chat.ws.disconnect()
        assert [f["type"] for f in frames] == ["ack", "delta", "delta", "delta", "completed"]
        completed = frames[-1]
        assert completed["text"] == "**Naruto** is in stock."
        assert [p["title"] for p in completed["products"]] == ["Naruto"]
        assert completed["metrics"]["backend"] == "bedrock" and completed["metrics"]["route"] == "on_demand"
        assert completed["metrics"]["provider_cache_hit"] is True
        call = bedrock.calls[0]
        assert call.model_id == SONNET
        assert call.operation == ("ConverseStream" if api == "converse" else "InvokeModelWithResponseStream")

    async def test_converse_marks_the_stable_prefix_with_a_cache_point(self, demo_catalog: None, bedrock: FakeBedrockRuntime) -> None:
        _use()
        chat = await open_chat()
        await chat.ask("Recommend a shonen manga like Dragon Ball", "c1")
        await chat.ask("Tell me more about the first one", "c2")
        await chat.ws.disconnect()
        first, second = bedrock.calls[0].body, bedrock.calls[1].body
        for body in (first, second):
            cache_at = next(i for i, block in enumerate(body["system"]) if "cachePoint" in block)
            assert body["system"][0]["text"].startswith("You are MangaAssist")
            assert "Store data" in body["system"][cache_at + 1]["text"]  # volatile context after the cache point
            assert "performanceConfig" not in body  # Sonnet v2 has no latency-optimized profile
        # The prefix before the cache point is byte-identical across turns: Bedrock can serve it from cache.
        prefix = lambda body: body["system"][: next(i for i, b in enumerate(body["system"]) if "cachePoint" in b)]  # noqa: E731
        assert prefix(first) == prefix(second)
        assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]

    async def test_latency_optimized_for_models_that_offer_it(self, demo_catalog: None, bedrock: FakeBedrockRuntime, settings) -> None:  # type: ignore[no-untyped-def]
        settings.BEDROCK_MODEL_ID = HAIKU
        _use()
        chat = await open_chat()
        await chat.ask("Hello", "h1")
        await chat.ws.disconnect()
        assert bedrock.calls[0].body["performanceConfig"] == {"latency": "optimized"}

    async def test_first_delta_reaches_the_socket_before_the_server_sends_the_second(
        self, demo_catalog: None, bedrock: FakeBedrockRuntime
    ) -> None:
        _use()
        release = Event()
        bedrock.push(Reply(chunks=["First", " second", " third."], hold_after_first=release))
        chat = await open_chat()
        await chat.send({"type": "message", "id": "f1", "text": "Hello"})
        frames = await chat.until("delta")
        assert frames[-1]["text"] == "First" and bedrock.calls[0].chunks_sent == 1
        release.set()
        rest = await chat.until("completed")
        await chat.ws.disconnect()
        assert rest[-1]["text"] == "First second third."

    async def test_count_tokens_gives_the_exact_prompt_size_beside_the_call(
        self, demo_catalog: None, bedrock: FakeBedrockRuntime, settings  # type: ignore[no-untyped-def]
    ) -> None:
        settings.BEDROCK_COUNT_TOKENS = True
        _use()
        chat = await open_chat()
        completed = (await chat.ask("Is Naruto in stock?", "ct1"))[-1]
        await chat.ws.disconnect()
        assert completed["metrics"]["exact_prompt_tokens"] > 0
        assert {c.operation for c in bedrock.calls} == {"ConverseStream", "CountTokens"}


class BedrockFaultTests:
    async def test_429_before_the_stream_is_retried_then_falls_back(self, demo_catalog: None, bedrock: FakeBedrockRuntime,
                                                                      settings) -> None:  # type: ignore[no-untyped-def]
        settings.LLM_MAX_RETRIES = 1
        settings.LLM_RETRY_BASE_SECONDS = 0.01
        settings.LLM_FALLBACK_MODEL_ID = HAIKU
        _use()
        bedrock.push(Reply(status=429), Reply(status=429), Reply(chunks=["Fallback", " answer."]))
        chat = await open_chat()
        frames = await chat.ask("Hello", "t1")
        await chat.ws.disconnect()
        assert frames[-1]["type"] == "completed" and frames[-1]["text"] == "Fallback answer."
        assert [c.model_id for c in bedrock.calls] == [SONNET, SONNET, HAIKU]  # one try each: botocore retries nothing
        assert frames[-1]["metrics"]["route"] == "secondary"

    @pytest.mark.parametrize("exception_type", ["throttlingException", "modelStreamErrorException"])
    async def test_exception_mid_stream_is_an_error_with_the_partial_answer_saved(
        self, demo_catalog: None, bedrock: FakeBedrockRuntime, exception_type: str
    ) -> None:
        _use()
        bedrock.push(Reply(chunks=["One", " two", " three"], exception_after=2, exception_type=exception_type))
        chat = await open_chat()
        frames = await chat.ask("Hello", "e1")
        await chat.ws.disconnect()
        assert [f["type"] for f in frames] == ["ack", "delta", "delta", "error"]
        assert frames[-1]["code"] == "upstream_unavailable"
        assert len(bedrock.calls) == 1  # text was sent: never retried
        answer = await _answer("e1")
        assert (answer.status, answer.text) == (TurnStatus.PARTIAL, "One two")

    async def test_cut_connection_mid_stream_is_an_error_with_the_partial_answer_saved(
        self, demo_catalog: None, bedrock: FakeBedrockRuntime
    ) -> None:
        _use()
        bedrock.push(Reply(chunks=["One", " two", " three"], cut_after=1))
        chat = await open_chat()
        frames = await chat.ask("Hello", "x1")
        await chat.ws.disconnect()
        assert [f["type"] for f in frames] == ["ack", "delta", "error"]
        assert (await _answer("x1")).status == TurnStatus.PARTIAL and len(bedrock.calls) == 1

    async def test_stall_is_a_failure_and_the_upstream_is_released(self, demo_catalog: None, bedrock: FakeBedrockRuntime,
                                                                     settings) -> None:  # type: ignore[no-untyped-def]
        settings.LLM_STALL_SECONDS = 0.3
        _use()
        bedrock.push(Reply(chunks=["One", " two", " three"], stall_after=1))
        chat = await open_chat()
        frames = await chat.ask("Hello", "s1")
        await chat.ws.disconnect()
        assert [f["type"] for f in frames] == ["ack", "delta", "error"]
        bedrock.wait_client_closed(bedrock.calls[0], timeout=1)
        assert (await _answer("s1")).failure_reason == "the stream stalled"

    async def test_stop_closes_the_upstream_connection_within_100_ms(self, demo_catalog: None, bedrock: FakeBedrockRuntime) -> None:
        _use()
        bedrock.push(Reply(chunks=["word "] * 200, delay=0.02))
        chat = await open_chat()
        await chat.send({"type": "message", "id": "stop1", "text": "Hello"})
        await chat.until("delta")
        stopped_at = time.monotonic()
        await chat.send({"type": "stop", "id": "stop1"})
        await chat.until("stopped")
        closed_at = bedrock.wait_client_closed(bedrock.calls[0], timeout=1)
        assert closed_at - stopped_at < 0.1
        assert bedrock.calls[0].chunks_sent < 200
        await chat.ws.disconnect()
        assert (await _answer("stop1")).status == TurnStatus.PARTIAL

    async def test_closed_socket_closes_the_upstream_connection(self, demo_catalog: None, bedrock: FakeBedrockRuntime) -> None:
        _use()
        bedrock.push(Reply(chunks=["word "] * 200, delay=0.02))
        chat = await open_chat()
        await chat.send({"type": "message", "id": "gone1", "text": "Hello"})
        await chat.until("delta")
        gone_at = time.monotonic()
        await chat.ws.disconnect()
        closed_at = bedrock.wait_client_closed(bedrock.calls[0], timeout=1)
        assert closed_at - gone_at < 0.1
        await asyncio.sleep(0.05)


class BedrockPrefillTests:
    """Continuing a cut answer (`resume`): the partial text is the final assistant message."""

    @pytest.mark.parametrize("api", ["converse", "invoke"])
    def test_the_partial_answer_is_sent_as_an_assistant_prefill_without_trailing_space(self, settings, api) -> None:  # type: ignore[no-untyped-def]
        from chat.llm.base import LLMRequest, Message, Route
        from chat.llm.bedrock import converse_arguments, invoke_body

        request = LLMRequest(system="s", stable_context="", volatile_context="", max_tokens=50,
                             messages=[Message("user", "Recommend a seinen manga")], route=Route("on_demand", SONNET),
                             prefill="Here are three seinen series: ")
        messages = converse_arguments(request)["messages"] if api == "converse" else invoke_body(request)["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[-1]["content"][0]["text"] == "Here are three seinen series:"
        request.prefill = ""
        plain = converse_arguments(request)["messages"] if api == "converse" else invoke_body(request)["messages"]
        assert [m["role"] for m in plain] == ["user"]
