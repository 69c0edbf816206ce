"""A local stand-in for AWS Bedrock Runtime's streaming API, driven by real boto3.

moto does not implement ConverseStream / InvokeModelWithResponseStream, and stubbing botocore
would hide exactly what breaks in production: event-stream framing, chunk timing, errors in the
middle of a stream, dropped connections and callers that hang up early. This server speaks the
real wire format (checked against botocore 1.44's service model), so boto3 parses it unmodified::

    with FakeBedrockRuntime() as fake:
        fake.push(Reply(chunks=["Hi", "!"], delay=0.1))
        client = boto3.client("bedrock-runtime", endpoint_url=fake.url, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        for event in client.converse_stream(modelId="m", messages=[...])["stream"]: ...

Exceptions the caller sees (botocore 1.44.5, urllib3 2.x):

* non-200 reply (e.g. 429 + ``ThrottlingException``): ``client.exceptions.ThrottlingException``
  (a ``botocore.exceptions.ClientError``), raised by ``converse_stream()`` itself;
* ``exception_after``: ``botocore.exceptions.EventStreamError`` (also a ``ClientError``) while
  iterating, with ``error.response["Error"]["Code"]`` = the exception type as sent
  (e.g. ``"modelStreamErrorException"``);
* ``cut_after``: ``urllib3.exceptions.ProtocolError`` while iterating (botocore does not wrap it).

To hang up from the client side, call ``response["stream"].close()`` from the thread that
iterates (or while nobody is blocked reading). While another thread is blocked reading, close()
itself blocks until that read times out; call ``response["stream"]._raw_stream.shutdown()``
(urllib3 >= 2.3) first: the reader then gets ``ProtocolError`` and the server sees the close.

For benchmarks, ``fake.pace = BedrockPace()`` answers every call nobody scripted at a Bedrock-like
pace (first event after a prefill time linear in the prompt, then one chunk per decode interval);
``GET /_fake/calls`` lists what each call waited, so a benchmark in another process can read it.

Note: botocore's ``retries={"max_attempts": N}`` counts retries, not attempts, so a client with
``max_attempts=1`` sends a throttled request twice (push two 429 replies to make it fail).
"""

from __future__ import annotations

import base64
import json
import random
import re
import select
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

POLL_INTERVAL = 0.005
"""How often a waiting handler checks whether the client hung up (seconds)."""

_ROUTE = re.compile(r"^/model/(?P<model>.+)/(?P<action>converse-stream|invoke-with-response-stream|count-tokens)$")
_OPERATIONS = {
    "converse-stream": "ConverseStream",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "count-tokens": "CountTokens",
}
_ERROR_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Malformed input request"),
    403: ("AccessDeniedException", "Access denied"),
    404: ("ResourceNotFoundException", "Model not found"),
    408: ("ModelTimeoutException", "Model timed out"),
    424: ("ModelErrorException", "Model error"),
    429: ("ThrottlingException", "Too many requests"),
    500: ("InternalServerException", "Internal server error"),
    503: ("ServiceUnavailableException", "Service unavailable"),
}
_TEXT_KEYS = {"text", "content", "system", "prompt", "inputText"}


@dataclass
class Reply:
    """One scripted response to a streaming call; the fields compose (e.g. delay + stall_after)."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    first_delay: float = 0.0
    """Seconds before the first event (for a non-200 reply: before the error response)."""
    delay: float = 0.0
    """Seconds between two text chunks."""
    status: int = 200
    """Non-200 fails the call before the stream starts, with an ``x-amzn-ErrorType`` header."""
    error_type: str | None = None
    """``x-amzn-ErrorType`` for a non-200 status; defaults to the status' usual Bedrock error."""
    exception_after: int | None = None
    """After N chunks, send a ``:message-type=exception`` frame and end the stream."""
    exception_type: str = "modelStreamErrorException"
    stall_after: int | None = None
    """After N chunks, send nothing until ``release_stalls()``, the client hangs up or ``stop()``."""
    cut_after: int | None = None
    """After N chunks, close the TCP connection without the chunked terminator."""
    hold_after_first: threading.Event | None = None
    """After the first chunk, wait for this event before sending the rest."""
    input_tokens: int = 100
    output_tokens: int | None = None
    """Reported output tokens; defaults to the number of chunks."""
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: int = 120


_PACE_WORDS = (
    "Here are a few series you may enjoy. The first one follows a young hero on a long journey, "
    "with sharp humour, strong friendships and battles that grow with every volume. The second "
    "one is quieter: a slice of life story about food, family and growing up. All of them are in "
    "stock, and volume one is a good place to start. Would you like to hear more about any of them?"
).split(" ")


def pace_chunks(count: int) -> list[str]:
    """`count` chunks of one word each: a paced answer's tokens, roughly."""
    return [("" if n == 0 else " ") + _PACE_WORDS[n % len(_PACE_WORDS)] for n in range(count)]


@dataclass
class BedrockPace:
    """A Bedrock-like pace for calls nobody scripted: what a benchmark's model does.

    First event after ``prefill_base_ms + prefill_per_token_ms * prompt tokens`` (prompt characters
    // 4), then one chunk of one word per ``decode_ms_per_token``; both ± ``jitter`` (the first
    delay per call, the decode interval per call). The defaults are the simulated backend's.
    """

    prefill_base_ms: float = 180.0
    prefill_per_token_ms: float = 0.08
    decode_ms_per_token: float = 5.0
    jitter: float = 0.15
    output_tokens: tuple[int, int] = (60, 180)
    """Words per answer, drawn uniformly per call."""

    def reply_for(self, body: dict[str, Any], rng: random.Random) -> Reply:
        prompt_tokens = max(1, sum(len(text) for text in _texts(body)) // 4)
        first_ms = (self.prefill_base_ms + self.prefill_per_token_ms * prompt_tokens) * (1 + rng.uniform(-self.jitter, self.jitter))
        decode_ms = self.decode_ms_per_token * (1 + rng.uniform(-self.jitter, self.jitter))
        words = rng.randint(*self.output_tokens)
        return Reply(chunks=pace_chunks(words), first_delay=max(0.0, first_ms) / 1000, delay=max(0.0, decode_ms) / 1000,
                     input_tokens=prompt_tokens, latency_ms=round(first_ms + decode_ms * (words - 1)))


@dataclass
class RecordedCall:
    """What the fake received for one request, and when it did what (``time.monotonic()``)."""

    operation: str
    """``"ConverseStream"``, ``"InvokeModelWithResponseStream"`` or ``"CountTokens"``."""
    model_id: str
    """URL-decoded, so an ARN arrives as written."""
    body: dict[str, Any]
    """Parsed request JSON (for InvokeModelWithResponseStream: the model body; ``{}`` if not JSON)."""
    headers: dict[str, str]
    started_at: float
    first_chunk_sent_at: float | None = None
    chunks_sent: int = 0
    client_closed_at: float | None = None
    """When the server noticed the client hung up (EOF/reset while waiting, or a failed write)."""
    finished_at: float | None = None
    """Set just before the last bytes go out, so it is already set when the client sees the end."""
    first_delay: float | None = None
    """Seconds the reply waited before its first event (the model's own time to first token)."""


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude + CRC, string headers, payload, message CRC (big-endian)."""
    encoded_headers = b"".join(_encode_header(name, value) for name, value in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded_headers) + len(payload) + 4, len(encoded_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _encode_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    """A modeled event: botocore parses the JSON payload into ``{event_type: body}``."""
    return encode_frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(body).encode(),
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    """A modeled in-stream exception: botocore raises ``EventStreamError`` on it."""
    return encode_frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": message}).encode(),
    )


class _ConverseScript:
    """ConverseStream events: each payload is the event member itself."""

    def __init__(self, reply: Reply, model_id: str) -> None:
        self.reply = reply

    def opening(self) -> list[bytes]:
        return [event_frame("messageStart", {"role": "assistant"})]

    def delta(self, text: str) -> bytes:
        return event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})

    def closing(self) -> list[bytes]:
        r = self.reply
        output = _output_tokens(r)
        usage = {
            "inputTokens": r.input_tokens,
            "outputTokens": output,
            # Bedrock's total counts cached prompt tokens too.
            "totalTokens": r.input_tokens + output + r.cache_read_tokens + r.cache_write_tokens,
            "cacheReadInputTokens": r.cache_read_tokens,
            "cacheWriteInputTokens": r.cache_write_tokens,
        }
        return [
            event_frame("contentBlockStop", {"contentBlockIndex": 0}),
            event_frame("messageStop", {"stopReason": "end_turn"}),
            event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": r.latency_ms}}),
        ]


class _InvokeScript:
    """InvokeModelWithResponseStream events: ``chunk`` frames wrapping Anthropic messages events."""

    def __init__(self, reply: Reply, model_id: str) -> None:
        self.reply = reply
        self.model_id = model_id

    @staticmethod
    def _chunk(claude_event: dict[str, Any]) -> bytes:
        return event_frame("chunk", {"bytes": base64.b64encode(json.dumps(claude_event).encode()).decode()})

    def opening(self) -> list[bytes]:
        r = self.reply
        message: dict[str, Any] = {
            "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.model_id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": r.input_tokens,
                "cache_creation_input_tokens": r.cache_write_tokens,
                "cache_read_input_tokens": r.cache_read_tokens,
                "output_tokens": 1,
            },
        }
        return [
            self._chunk({"type": "message_start", "message": message}),
            self._chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ]

    def delta(self, text: str) -> bytes:
        return self._chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})

    def closing(self) -> list[bytes]:
        r = self.reply
        output = _output_tokens(r)
        metrics = {
            "inputTokenCount": r.input_tokens,
            "outputTokenCount": output,
            "invocationLatency": r.latency_ms,
            "firstByteLatency": round(r.first_delay * 1000),
            "cacheReadInputTokenCount": r.cache_read_tokens,
            "cacheWriteInputTokenCount": r.cache_write_tokens,
        }
        return [
            self._chunk({"type": "content_block_stop", "index": 0}),
            self._chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"output_tokens": output}}),
            self._chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
        ]


def _output_tokens(reply: Reply) -> int:
    return reply.output_tokens if reply.output_tokens is not None else len(reply.chunks)


def _texts(node: Any, key: str | None = None) -> Iterator[str]:
    """Every prompt string in a Converse or Anthropic-style request (a list inherits its key)."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _texts(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item, key)
    elif isinstance(node, str) and key in _TEXT_KEYS:
        yield node


def rough_token_count(body: dict[str, Any]) -> int:
    """CountTokens' answer: characters of the prompt text // 4, at least 1."""
    request = body.get("input") or {}
    texts: list[str] = []
    if "converse" in request:
        texts = list(_texts(request["converse"]))
    elif "invokeModel" in request:
        raw = base64.b64decode(request["invokeModel"].get("body") or "")
        try:
            texts = list(_texts(json.loads(raw)))
        except ValueError:
            texts = [raw.decode(errors="replace")]
    return max(1, sum(len(text) for text in texts) // 4)


def _mark_finished(call: RecordedCall) -> None:
    if call.finished_at is None:
        call.finished_at = time.monotonic()


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeBedrockRuntime) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; streaming responses are chunked, one event-stream frame per chunk."""

    # HTTP/1.1 for chunked encoding; no Nagle so each small frame leaves at once.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._peer_sent_data = False
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Quiet: tests read RecordedCall, not access logs."""

    def do_POST(self) -> None:
        started = time.monotonic()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _ROUTE.match(urlsplit(self.path).path)
        if match is None:
            self._send_json(404, {"message": f"No route for {self.path}"}, "UnknownOperationException")
            return
        fake = self.server.fake
        call = RecordedCall(
            operation=_OPERATIONS[match["action"]],
            model_id=unquote(match["model"]),
            body=_parse_json(raw),
            headers=dict(self.headers.items()),
            started_at=started,
        )
        fake._record(call)
        try:
            if call.operation == "CountTokens":
                self._send_json(200, {"inputTokens": rough_token_count(call.body)}, call=call)
            else:
                reply = fake._next_reply(call)
                call.first_delay = reply.first_delay
                self._stream(call, reply)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self._client_gone(call)
        finally:
            _mark_finished(call)

    def do_GET(self) -> None:
        """``/_fake/calls``: every streaming call so far, with what it waited (for benchmarks)."""
        if urlsplit(self.path).path != "/_fake/calls":
            self._send_json(404, {"message": f"No route for {self.path}"}, "UnknownOperationException")
            return
        self._send_json(200, {"calls": self.server.fake.call_summaries()})

    def _send_json(self, status: int, body: dict[str, Any], error_type: str | None = None,
                   call: RecordedCall | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        if call is not None:
            _mark_finished(call)
        self.wfile.write(data)

    def _stream(self, call: RecordedCall, reply: Reply) -> None:
        if reply.status != 200:
            if self._wait(call, seconds=reply.first_delay):
                default_type, message = _ERROR_DEFAULTS.get(reply.status, ("InternalServerException", "Error"))
                self._send_json(reply.status, {"message": message}, reply.error_type or default_type, call)
            return
        script = (_ConverseScript if call.operation == "ConverseStream" else _InvokeScript)(reply, call.model_id)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if call.operation == "InvokeModelWithResponseStream":
            self.send_header("X-Amzn-Bedrock-Content-Type", "application/json")
        self.end_headers()

        if not (self._wait(call, seconds=reply.first_delay) and self._write_all(call, script.opening())):
            return
        for index, text in enumerate(reply.chunks):
            if not self._checkpoint(call, reply, index):
                return
            if index > 0 and not self._wait(call, seconds=reply.delay):
                return
            # Counted before the write, so a client that has read a chunk always sees it counted.
            call.chunks_sent += 1
            if index == 0:
                call.first_chunk_sent_at = time.monotonic()
            if not self._write(call, script.delta(text)):
                call.chunks_sent -= 1
                if index == 0:
                    call.first_chunk_sent_at = None
                return
            hold = reply.hold_after_first if index == 0 else None
            if hold is not None and not self._wait(call, event=hold):
                return
        if self._checkpoint(call, reply, len(reply.chunks)) and self._write_all(call, script.closing()):
            self._end_body(call)

    def _checkpoint(self, call: RecordedCall, reply: Reply, sent: int) -> bool:
        """Apply the stall / exception / cut scripted for after `sent` chunks; False ends the stream."""
        if reply.stall_after == sent and not self._wait(call, event=self.server.fake._released):
            return False
        if reply.exception_after == sent:
            _mark_finished(call)
            if self._write(call, exception_frame(reply.exception_type, f"Simulated {reply.exception_type}")):
                self._end_body(call)
            self.close_connection = True
            return False
        if reply.cut_after == sent:
            self.close_connection = True
            _mark_finished(call)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        return True

    def _write(self, call: RecordedCall, frame: bytes) -> bool:
        """Send one frame as one HTTP chunk; False if the client is gone."""
        if self._peer_closed(0):
            self._client_gone(call)
            return False
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self._client_gone(call)
            return False
        return True

    def _write_all(self, call: RecordedCall, frames: list[bytes]) -> bool:
        return all(self._write(call, frame) for frame in frames)

    def _end_body(self, call: RecordedCall) -> None:
        _mark_finished(call)
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self._client_gone(call)

    def _wait(self, call: RecordedCall, seconds: float | None = None, event: threading.Event | None = None) -> bool:
        """Wait for `seconds` or `event` while watching the socket; False if the client left or the fake stops."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if event is not None and event.is_set():
                return True
            if self.server.fake._stopping.is_set():
                self.close_connection = True
                return False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return True
            timeout = POLL_INTERVAL if deadline is None else min(POLL_INTERVAL, deadline - now)
            if self._peer_closed(timeout):
                self._client_gone(call)
                return False

    def _peer_closed(self, timeout: float) -> bool:
        """True once the client sent EOF or reset the connection (checked without consuming data)."""
        if self._peer_sent_data:  # the socket stays readable forever; nothing more to learn from it
            time.sleep(timeout)
            return False
        try:
            readable, _, _ = select.select([self.connection], [], [], timeout)
            if not readable:
                return False
            data = self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True
        if data:
            self._peer_sent_data = True
            return False
        return True

    def _client_gone(self, call: RecordedCall) -> None:
        if call.client_closed_at is None:
            call.client_closed_at = time.monotonic()
        self.close_connection = True


class FakeBedrockRuntime:
    """A Bedrock Runtime endpoint on 127.0.0.1 that plays queued `Reply` scripts and records calls."""

    def __init__(self) -> None:
        self.default_reply = Reply()
        self.pace: BedrockPace | None = None
        """When set, calls with no queued reply get one at this pace instead of `default_reply`."""
        self.calls: list[RecordedCall] = []
        self._pace_rng = random.Random(7)
        self._replies: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._released = threading.Event()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, for boto3's ``endpoint_url``."""
        if self._server is None:
            raise RuntimeError("FakeBedrockRuntime is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeBedrockRuntime:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name="fake-bedrock-runtime", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; waiting handlers give up and open connections are shut down."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeBedrockRuntime:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def push(self, *replies: Reply) -> None:
        """Queue replies; each streaming call takes the next one, then `default_reply` once empty."""
        with self._changed:
            self._replies.extend(replies)

    def release_stalls(self) -> None:
        """Let every stalled stream continue; sticky, so later `stall_after` points pass straight through."""
        self._released.set()

    def wait_for_calls(self, n: int, timeout: float = 5) -> None:
        """Block until at least `n` calls were received; AssertionError on timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.calls) >= n, timeout):
                raise AssertionError(f"expected {n} calls within {timeout}s, got {len(self.calls)}")

    def wait_client_closed(self, call: RecordedCall, timeout: float = 2) -> float:
        """Block until the server noticed the client hang up; returns ``call.client_closed_at``."""
        deadline = time.monotonic() + timeout
        while call.client_closed_at is None:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the server did not see the client close {call.operation} within {timeout}s")
            time.sleep(POLL_INTERVAL)
        return call.client_closed_at

    def call_summaries(self) -> list[dict[str, Any]]:
        """Per streaming call: when it started, what it waited, when its first chunk left (monotonic seconds)."""
        with self._changed:
            calls = list(self.calls)
        return [{"operation": call.operation, "started_at": call.started_at, "first_delay": call.first_delay,
                 "first_chunk_ms": None if call.first_chunk_sent_at is None
                 else round((call.first_chunk_sent_at - call.started_at) * 1000, 2),
                 "chunks_sent": call.chunks_sent, "client_closed": call.client_closed_at is not None}
                for call in calls if call.operation != "CountTokens"]

    def _next_reply(self, call: RecordedCall | None = None) -> Reply:
        with self._changed:
            if self._replies:
                return self._replies.popleft()
            if self.pace is not None and call is not None:
                return self.pace.reply_for(call.body, self._pace_rng)
            return self.default_reply

    def _record(self, call: RecordedCall) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._changed:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
