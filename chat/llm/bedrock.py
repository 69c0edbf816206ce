"""Amazon Bedrock: ConverseStream (default) or InvokeModelWithResponseStream, with boto3.

- The client is created once per process and reused; botocore's own retries are
  off (`max_attempts=1`): the orchestrator's policy decides what to retry.
- The prompt's stable prefix (system prompt, conversation summary) ends with a
  `cachePoint`, so Bedrock's prompt cache serves it on follow-up turns.
- `performanceConfig={"latency": "optimized"}` for models that offer it.
- The blocking event stream is read on a worker thread; each delta is handed to
  the event loop as botocore yields it. Closing the stream shuts the socket down,
  so a stopped answer frees the upstream connection at once.
"""

from __future__ import annotations

import json
from contextlib import aclosing
import logging
import socket
import threading
from typing import Any, AsyncIterator, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)
from django.conf import settings

from .base import (
    LLMError,
    LLMRequest,
    LLMStreamError,
    LLMThrottled,
    LLMUnavailable,
    Message,
    StreamEvent,
    TextDelta,
    Usage,
)
from .streaming import iterate_in_thread

logger = logging.getLogger(__name__)

# Models with a latency-optimized inference profile (Bedrock documentation).
LATENCY_OPTIMIZED_MODELS = ("anthropic.claude-3-5-haiku", "meta.llama3-1-70b", "meta.llama3-1-405b", "amazon.nova-pro")
RETRYABLE_CODES = {"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException",
                   "InternalServerException", "ModelTimeoutException", "TooManyRequestsException"}

_client_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def runtime_client() -> Any:
    """The process's bedrock-runtime client (thread-safe; created once)."""
    key = (settings.AWS_REGION, settings.BEDROCK_ENDPOINT_URL)
    client = _clients.get(key)
    if client is None:
        with _client_lock:
            client = _clients.get(key)
            if client is None:
                config = Config(
                    # One attempt in all (`max_attempts` would count retries): our policy retries, not botocore's.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=settings.BEDROCK_CONNECT_TIMEOUT_SECONDS,
                    read_timeout=settings.LLM_STALL_SECONDS + 5,
                    max_pool_connections=settings.BEDROCK_MAX_CONNECTIONS,
                    tcp_keepalive=True,
                )
                client = boto3.session.Session().client(
                    "bedrock-runtime", region_name=settings.AWS_REGION,
                    endpoint_url=settings.BEDROCK_ENDPOINT_URL, config=config)
                _clients[key] = client
    return client


def latency_optimized(model_id: str) -> bool:
    mode = settings.BEDROCK_LATENCY_OPTIMIZED
    if mode == "auto":
        return any(marker in model_id for marker in LATENCY_OPTIMIZED_MODELS)
    return mode == "true"


def alternating(messages: list[Message]) -> list[Message]:
    """Messages as Bedrock wants them: starting with the user, roles alternating (same roles merged)."""
    out: list[Message] = []
    for message in messages:
        if not message.text.strip():
            continue
        if not out and message.role != "user":
            continue
        if out and out[-1].role == message.role:
            out[-1] = Message(message.role, out[-1].text + "\n\n" + message.text)
        else:
            out.append(message)
    return out


def with_prefill(request: LLMRequest) -> list[Message]:
    """The turns, ending with the answer so far as an assistant prefill when continuing one.

    Bedrock refuses a final assistant message that ends in whitespace; the orchestrator drops a
    repeated space at the start of the continuation.
    """
    messages = alternating(request.messages)
    prefill = request.prefill.rstrip()
    if prefill:
        messages.append(Message("assistant", prefill))
    return messages


def converse_arguments(request: LLMRequest) -> dict[str, Any]:
    """ConverseStream arguments, laid out from the most stable block to the most volatile."""
    system: list[dict] = [{"text": request.system}]
    if request.stable_context:
        system.append({"text": request.stable_context})
    if settings.BEDROCK_PROMPT_CACHE:
        system.append({"cachePoint": {"type": "default"}})
    if request.volatile_context:
        system.append({"text": request.volatile_context})
    arguments: dict[str, Any] = {
        "modelId": request.route.model_id,
        "system": system,
        "messages": [{"role": m.role, "content": [{"text": m.text}]} for m in with_prefill(request)],
        "inferenceConfig": {"maxTokens": request.max_tokens, "temperature": settings.LLM_TEMPERATURE},
    }
    if latency_optimized(request.route.model_id):
        arguments["performanceConfig"] = {"latency": "optimized"}
    return arguments


def invoke_body(request: LLMRequest) -> dict[str, Any]:
    """The Anthropic messages body for InvokeModelWithResponseStream."""
    stable = request.system + ("\n\n" + request.stable_context if request.stable_context else "")
    system: list[dict] = [{"type": "text", "text": stable}]
    if settings.BEDROCK_PROMPT_CACHE:
        system[0]["cache_control"] = {"type": "ephemeral"}
    if request.volatile_context:
        system.append({"type": "text", "text": request.volatile_context})
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": request.max_tokens,
        "temperature": settings.LLM_TEMPERATURE,
        "system": system,
        "messages": [{"role": m.role, "content": [{"type": "text", "text": m.text}]} for m in with_prefill(request)],
    }


def _shutdown(stream: Any) -> None:
    """Shut the stream's socket down from another thread: a blocked read returns at once.

    A plain close() would wait for the blocked reader's read timeout; urllib3 (>= 2.3)
    offers shutdown() for exactly this, with the raw socket as a fallback.
    """
    raw = getattr(stream, "_raw_stream", None)
    shutdown = getattr(raw, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception:  # noqa: BLE001 - fall through to the socket itself
            pass
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock"), ("connection", "sock")):
        node = raw
        for attribute in path:
            node = getattr(node, attribute, None)
            if node is None:
                break
        if isinstance(node, socket.socket):
            try:
                node.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            break
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - already closed or half-read: nothing more to free
        pass


def _error(exc: BaseException) -> LLMError:
    """Our error for what botocore raised: retryable or not, with any Retry-After."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        retry_after = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")
        seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        if code in {"ThrottlingException", "TooManyRequestsException"}:
            return LLMThrottled(f"Bedrock throttled the request ({code})", retry_after=seconds)
        if code in RETRYABLE_CODES:
            return LLMUnavailable(f"Bedrock is unavailable ({code})", retry_after=seconds)
        return LLMError(f"Bedrock refused the request ({code}): {exc}")
    if isinstance(exc, EventStreamError):
        code = exc.response.get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
        if "throttling" in code.lower():
            return LLMThrottled(f"Bedrock throttled the stream ({code})")
        return LLMUnavailable(f"Bedrock's stream failed ({code or exc})")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return LLMUnavailable(f"Bedrock connection failed: {exc}")
    if isinstance(exc, BotoCoreError):
        return LLMUnavailable(f"Bedrock call failed: {exc}")
    name = type(exc).__name__
    if name in {"ProtocolError", "IncompleteRead", "ConnectionResetError", "RemoteDisconnected"} or isinstance(exc, OSError):
        return LLMUnavailable(f"Bedrock connection was cut: {name}")
    return LLMStreamError(f"Bedrock stream failed: {name}: {exc}")


class BedrockBackend:
    name = "bedrock"

    def __init__(self, *, api: str | None = None) -> None:
        self.api = api or settings.BEDROCK_API

    def warm(self) -> None:
        runtime_client()

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        holder: dict[str, Any] = {}

        def open_stream() -> Iterator[StreamEvent]:
            client = runtime_client()
            if self.api == "invoke":
                response = client.invoke_model_with_response_stream(
                    modelId=request.route.model_id, body=json.dumps(invoke_body(request)),
                    contentType="application/json", accept="application/json")
                holder["stream"] = response["body"]
                return self._invoke_events(response["body"])
            response = client.converse_stream(**converse_arguments(request))
            holder["stream"] = response["stream"]
            return self._converse_events(response["stream"])

        def abort() -> None:
            if "stream" in holder:
                _shutdown(holder["stream"])

        try:
            async with aclosing(iterate_in_thread(open_stream, abort=abort)) as events:
                async for event in events:
                    yield event
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our policy's errors
            raise _error(exc) from exc

    @staticmethod
    def _converse_events(stream: Any) -> Iterator[StreamEvent]:
        for event in stream:
            if "contentBlockDelta" in event:
                text = event["contentBlockDelta"].get("delta", {}).get("text")
                if text:
                    yield TextDelta(text)
            elif "metadata" in event:
                usage = event["metadata"].get("usage", {})
                yield Usage(
                    input_tokens=usage.get("inputTokens", 0), output_tokens=usage.get("outputTokens", 0),
                    cache_read_tokens=usage.get("cacheReadInputTokens", 0) or 0,
                    cache_write_tokens=usage.get("cacheWriteInputTokens", 0) or 0,
                    provider_latency_ms=event["metadata"].get("metrics", {}).get("latencyMs"))

    @staticmethod
    def _invoke_events(stream: Any) -> Iterator[StreamEvent]:
        usage: dict[str, int] = {}
        for event in stream:
            if "chunk" not in event:
                continue
            data = json.loads(event["chunk"]["bytes"])  # botocore has already base64-decoded the blob
            kind = data.get("type")
            if kind == "content_block_delta" and data.get("delta", {}).get("type") == "text_delta":
                yield TextDelta(data["delta"]["text"])
            elif kind == "message_start":
                start = data.get("message", {}).get("usage", {})
                usage["input"] = start.get("input_tokens", 0)
                usage["cache_read"] = start.get("cache_read_input_tokens", 0) or 0
                usage["cache_write"] = start.get("cache_creation_input_tokens", 0) or 0
            elif kind == "message_delta":
                usage["output"] = data.get("usage", {}).get("output_tokens", 0)
            metrics = data.get("amazon-bedrock-invocationMetrics")
            if metrics:
                yield Usage(
                    input_tokens=metrics.get("inputTokenCount", usage.get("input", 0)),
                    output_tokens=metrics.get("outputTokenCount", usage.get("output", 0)),
                    cache_read_tokens=metrics.get("cacheReadInputTokenCount", usage.get("cache_read", 0)) or 0,
                    cache_write_tokens=metrics.get("cacheWriteInputTokenCount", usage.get("cache_write", 0)) or 0,
                    provider_latency_ms=metrics.get("firstByteLatency"))

    async def count_tokens(self, request: LLMRequest) -> int:
        """Bedrock's exact input-token count for this prompt (CountTokens)."""
        import asyncio

        arguments = converse_arguments(request)
        payload = {"converse": {"system": arguments["system"], "messages": arguments["messages"]}}
        response = await asyncio.get_running_loop().run_in_executor(
            None, lambda: runtime_client().count_tokens(modelId=request.route.model_id, input=payload))
        return int(response["inputTokens"])
