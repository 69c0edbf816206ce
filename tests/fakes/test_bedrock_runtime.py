"""The fake Bedrock Runtime, checked through real boto3: what the app's client will actually see."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError
from urllib3.exceptions import ProtocolError

from tests.fakes.bedrock_runtime import FakeBedrockRuntime, RecordedCall, Reply

MODEL_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Recommend a manga like Berserk, please."}]}]


@pytest.fixture
def fake() -> Iterator[FakeBedrockRuntime]:
    with FakeBedrockRuntime() as server:
        yield server


@pytest.fixture
def client(fake: FakeBedrockRuntime) -> Any:
    # Note: botocore's retries.max_attempts counts *retries*, so this client makes up to 2 attempts.
    return boto3.client(
        "bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=5, connect_timeout=2),
    )


def converse(client: Any, model_id: str = "anthropic.claude-3-5-haiku") -> Any:
    return client.converse_stream(modelId=model_id, messages=MESSAGES, system=[{"text": "You are MangaAssist."}])


def invoke(client: Any) -> Any:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Recommend a manga like Berserk, please."}]}
    return client.invoke_model_with_response_stream(modelId="anthropic.claude-3-5-haiku", body=json.dumps(body))


def claude_events(response: Any) -> Iterator[dict[str, Any]]:
    for event in response["body"]:
        yield json.loads(event["chunk"]["bytes"])


def first_text(events: Iterator[dict[str, Any]]) -> str:
    """Advance a Converse stream to its first text delta."""
    for event in events:
        if "contentBlockDelta" in event:
            return str(event["contentBlockDelta"]["delta"]["text"])
    raise AssertionError("stream ended before any text")


def converse_text(events: Iterator[dict[str, Any]]) -> str:
    return "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)


class ConverseStreamTests:
    def test_streams_text_then_stop_and_usage(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["Try ", "Vinland ", "Saga."], input_tokens=42, cache_read_tokens=7,
                        cache_write_tokens=3, latency_ms=250))

        response = converse(client, MODEL_ARN)
        events = list(response["stream"])

        assert converse_text(iter(events)) == "Try Vinland Saga."
        assert events[0] == {"messageStart": {"role": "assistant"}}
        assert {"contentBlockStop": {"contentBlockIndex": 0}} in events
        assert {"messageStop": {"stopReason": "end_turn"}} in events
        assert events[-1]["metadata"] == {
            "usage": {"inputTokens": 42, "outputTokens": 3, "totalTokens": 55,
                      "cacheReadInputTokens": 7, "cacheWriteInputTokens": 3},
            "metrics": {"latencyMs": 250},
        }
        call = fake.calls[0]
        assert call.operation == "ConverseStream"
        assert call.model_id == MODEL_ARN  # sent URL-encoded, recorded decoded
        assert call.body["messages"] == MESSAGES
        assert call.body["system"] == [{"text": "You are MangaAssist."}]
        assert call.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=test/")
        assert call.chunks_sent == 3 and call.client_closed_at is None
        assert call.started_at <= call.first_chunk_sent_at <= call.finished_at  # type: ignore[operator]

    def test_chunks_reach_the_client_one_by_one(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["a", "b", "c"], delay=0.2))

        events = iter(converse(client)["stream"])
        assert first_text(events) == "a"
        first_read_at = time.monotonic()
        assert converse_text(events) == "bc"

        call = fake.calls[0]
        assert call.first_chunk_sent_at is not None and call.finished_at is not None
        assert first_read_at - call.first_chunk_sent_at < 0.1
        assert call.finished_at - first_read_at > 0.3  # the last chunk left ~0.4 s after the first

    def test_first_delay_comes_before_the_first_event(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["x"], first_delay=0.3))

        assert converse_text(converse(client)["stream"]) == "x"
        call = fake.calls[0]
        assert call.first_chunk_sent_at is not None and call.first_chunk_sent_at - call.started_at >= 0.3


class InvokeModelWithResponseStreamTests:
    def test_streams_anthropic_events_with_invocation_metrics(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["One", " Piece"], input_tokens=30, output_tokens=5, latency_ms=90, first_delay=0.05))

        response = invoke(client)
        assert response["contentType"] == "application/json"
        events = list(claude_events(response))

        assert [e["type"] for e in events] == [
            "message_start", "content_block_start", "content_block_delta", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop",
        ]
        assert events[0]["message"]["usage"]["input_tokens"] == 30
        deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
        assert deltas == [{"type": "text_delta", "text": "One"}, {"type": "text_delta", "text": " Piece"}]
        assert events[5]["delta"]["stop_reason"] == "end_turn"
        assert events[5]["usage"] == {"output_tokens": 5}
        metrics = events[6]["amazon-bedrock-invocationMetrics"]
        assert metrics["inputTokenCount"] == 30 and metrics["outputTokenCount"] == 5
        assert metrics["invocationLatency"] == 90 and metrics["firstByteLatency"] == 50

        call = fake.calls[0]
        assert call.operation == "InvokeModelWithResponseStream"
        assert call.body["messages"][0]["content"] == "Recommend a manga like Berserk, please."
        assert call.chunks_sent == 2


class ErrorTests:
    def test_429_raises_throttling_before_the_stream(self, fake: FakeBedrockRuntime, client: Any) -> None:
        # retries.max_attempts=1 means one retry: botocore calls twice before giving up.
        fake.push(Reply(status=429), Reply(status=429))

        with pytest.raises(client.exceptions.ThrottlingException) as caught:
            converse(client)

        assert isinstance(caught.value, ClientError)
        assert caught.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Too many requests"}
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert len(fake.calls) == 2

    @pytest.mark.parametrize(("status", "error_type", "attempts"), [
        (503, "ServiceUnavailableException", 2),
        (400, "ValidationException", 1),
    ])
    def test_other_statuses_raise_their_modeled_error(self, fake: FakeBedrockRuntime, client: Any,
                                                      status: int, error_type: str, attempts: int) -> None:
        fake.default_reply = Reply(status=status, error_type=error_type)

        with pytest.raises(getattr(client.exceptions, error_type)):
            invoke(client)
        assert len(fake.calls) == attempts

    @pytest.mark.parametrize("exception_type", ["throttlingException", "modelStreamErrorException"])
    def test_exception_frame_raises_event_stream_error(self, fake: FakeBedrockRuntime, client: Any,
                                                       exception_type: str) -> None:
        fake.push(Reply(chunks=["Hello", " there"], exception_after=1, exception_type=exception_type))

        events = iter(converse(client)["stream"])
        assert first_text(events) == "Hello"
        with pytest.raises(EventStreamError) as caught:
            next(events)

        assert caught.value.response["Error"]["Code"] == exception_type
        assert fake.calls[0].chunks_sent == 1

    def test_exception_frame_in_invoke_stream(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(exception_after=0))

        with pytest.raises(EventStreamError) as caught:
            list(claude_events(invoke(client)))
        assert caught.value.response["Error"]["Code"] == "modelStreamErrorException"

    def test_cut_connection_raises_urllib3_protocol_error(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["Hello", " there"], cut_after=1))

        events = iter(converse(client)["stream"])
        assert first_text(events) == "Hello"
        # botocore does not wrap errors raised while iterating an event stream.
        with pytest.raises(ProtocolError):
            list(events)
        assert fake.calls[0].chunks_sent == 1


class ScriptingTests:
    def test_replies_are_used_in_order_then_the_default(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.default_reply = Reply(chunks=["default"])
        fake.push(Reply(chunks=["first"]), Reply(chunks=["second"]))

        texts = [converse_text(converse(client)["stream"]) for _ in range(3)]

        assert texts == ["first", "second", "default"]
        fake.wait_for_calls(3)

    def test_stall_until_released(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["a", "b", "c"], stall_after=1))

        events = iter(converse(client)["stream"])
        assert first_text(events) == "a"
        time.sleep(0.2)
        assert fake.calls[0].chunks_sent == 1
        fake.release_stalls()

        assert converse_text(events) == "bc"
        assert fake.calls[0].client_closed_at is None

    def test_hold_after_first_waits_for_the_event(self, fake: FakeBedrockRuntime, client: Any) -> None:
        go = threading.Event()
        fake.push(Reply(chunks=["a", "b"], hold_after_first=go))

        events = iter(converse(client)["stream"])
        assert first_text(events) == "a"
        time.sleep(0.2)
        assert fake.calls[0].chunks_sent == 1
        go.set()

        assert converse_text(events) == "b"

    def test_wait_for_calls_times_out_with_assertion(self, fake: FakeBedrockRuntime) -> None:
        with pytest.raises(AssertionError):
            fake.wait_for_calls(1, timeout=0.05)


class ClientHangUpTests:
    """The server must notice quickly when the app abandons a stream (cancelled chat turn)."""

    @staticmethod
    def _stalled_after_first(fake: FakeBedrockRuntime, client: Any) -> tuple[Any, Iterator[Any], RecordedCall]:
        fake.push(Reply(chunks=["a", "b", "c"], stall_after=1))
        response = converse(client)
        events = iter(response["stream"])
        assert first_text(events) == "a"
        return response, events, fake.calls[0]

    def test_closing_the_stream_during_a_stall(self, fake: FakeBedrockRuntime, client: Any) -> None:
        response, _, call = self._stalled_after_first(fake, client)

        closed_at = time.monotonic()
        response["stream"].close()

        assert fake.wait_client_closed(call, timeout=0.5) - closed_at < 0.5
        assert call.chunks_sent == 1
        call_done = time.monotonic() + 1
        while call.finished_at is None and time.monotonic() < call_done:
            time.sleep(0.01)
        assert call.finished_at is not None  # the handler stopped instead of waiting for a release

    def test_closing_the_raw_stream_during_a_stall(self, fake: FakeBedrockRuntime, client: Any) -> None:
        response, _, call = self._stalled_after_first(fake, client)

        closed_at = time.monotonic()
        response["stream"]._raw_stream.close()

        assert fake.wait_client_closed(call, timeout=0.5) - closed_at < 0.5

    def test_closing_between_chunks(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["a", "b", "c"], delay=1.0))
        response = converse(client)
        assert first_text(iter(response["stream"])) == "a"

        closed_at = time.monotonic()
        response["stream"].close()

        call = fake.calls[0]
        assert fake.wait_client_closed(call, timeout=0.5) - closed_at < 0.5
        assert call.chunks_sent == 1

    def test_shutdown_from_another_thread_wakes_a_blocked_reader(self, fake: FakeBedrockRuntime, client: Any) -> None:
        # close() from another thread blocks until the reader's read_timeout; shutdown() does not.
        response, events, call = self._stalled_after_first(fake, client)
        outcome: list[BaseException] = []

        def read_rest() -> None:
            try:
                list(events)
            except Exception as error:  # noqa: BLE001 - recorded for the assertion below
                outcome.append(error)

        reader = threading.Thread(target=read_rest)
        reader.start()
        time.sleep(0.1)  # the reader is now blocked in recv()
        closed_at = time.monotonic()
        response["stream"]._raw_stream.shutdown()  # urllib3 >= 2.3: shutdown(SHUT_RD) on the socket
        response["stream"].close()

        assert fake.wait_client_closed(call, timeout=0.5) - closed_at < 0.5
        reader.join(timeout=2)
        assert not reader.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], ProtocolError)


class CountTokensTests:
    def test_counts_converse_input(self, fake: FakeBedrockRuntime, client: Any) -> None:
        fake.push(Reply(chunks=["still queued"]))

        response = client.count_tokens(modelId=MODEL_ARN, input={"converse": {
            "messages": MESSAGES, "system": [{"text": "You are MangaAssist."}]}})

        expected = (len(MESSAGES[0]["content"][0]["text"]) + len("You are MangaAssist.")) // 4  # type: ignore[index]
        assert response["inputTokens"] == expected
        call = fake.calls[0]
        assert call.operation == "CountTokens" and call.model_id == MODEL_ARN
        assert call.body["input"]["converse"]["messages"] == MESSAGES
        # CountTokens does not consume scripted replies.
        assert converse_text(converse(client)["stream"]) == "still queued"

    def test_counts_invoke_model_body(self, fake: FakeBedrockRuntime, client: Any) -> None:
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 40}]}], "system": "y" * 8}

        response = client.count_tokens(modelId="anthropic.claude-3-5-haiku",
                                       input={"invokeModel": {"body": json.dumps(body)}})

        assert response["inputTokens"] == 12
        assert json.loads(base64.b64decode(fake.calls[0].body["input"]["invokeModel"]["body"])) == body

    def test_at_least_one_token(self, client: Any) -> None:
        response = client.count_tokens(modelId="m", input={"converse": {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}]}})
        assert response["inputTokens"] == 1
