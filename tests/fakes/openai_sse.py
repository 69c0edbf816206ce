"""A local OpenAI-compatible streaming server (chat/completions over SSE) for the openai backend's tests.

Speaks the wire for real: chunked transfer encoding, one `data:` event per chunk,
a final usage chunk when `stream_options.include_usage` is set, `data: [DONE]`.
Scripted replies inject 429s, cut connections and stalls; the server records when
a client goes away, so tests can check that a stopped answer frees the upstream.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class SSEReply:
    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " model."])
    first_delay: float = 0.0
    delay: float = 0.0
    status: int = 200
    retry_after: str | None = None
    cut_after: int | None = None
    stall_after: int | None = None
    prompt_tokens: int = 42
    cached_tokens: int = 0


@dataclass
class SSECall:
    body: dict
    started_at: float
    chunks_sent: int = 0
    client_closed_at: float | None = None


class FakeOpenAIServer:
    def __init__(self) -> None:
        self.replies: list[SSEReply] = []
        self.default_reply = SSEReply()
        self.calls: list[SSECall] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                call = SSECall(body=body, started_at=time.monotonic())
                with fake._lock:
                    fake.calls.append(call)
                    reply = fake.replies.pop(0) if fake.replies else fake.default_reply
                fake._serve(self, reply, call)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def push(self, *replies: SSEReply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def wait_client_closed(self, call: SSECall, timeout: float = 2.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if call.client_closed_at is not None:
                return call.client_closed_at
            time.sleep(0.005)
        raise AssertionError("the client never closed the connection")

    # --- serving -------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, reply: SSEReply, call: SSECall) -> None:
        sock: socket.socket = handler.connection
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if reply.status != 200:
            payload = json.dumps({"error": {"message": "rate limited", "type": "rate_limit"}}).encode()
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            if reply.retry_after:
                handler.send_header("Retry-After", reply.retry_after)
            handler.end_headers()
            handler.wfile.write(payload)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if not self._wait(sock, reply.first_delay, call):
            return
        model = call.body.get("model", "fake")
        for n, text in enumerate(reply.chunks):
            if reply.cut_after is not None and n == reply.cut_after:
                sock.shutdown(socket.SHUT_RDWR)
                return
            if reply.stall_after is not None and n == reply.stall_after:
                self._wait(sock, 3600, call, until=self._release)
                return
            if n and not self._wait(sock, reply.delay, call):
                return
            event = {"id": "c1", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            if not self._send(handler, event, call):
                return
            call.chunks_sent += 1
        if call.body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": len(reply.chunks),
                     "total_tokens": reply.prompt_tokens + len(reply.chunks),
                     "prompt_tokens_details": {"cached_tokens": reply.cached_tokens}}
            self._send(handler, {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}, call)
        self._write(handler, b"data: [DONE]\n\n", call)
        self._write_raw(handler, b"0\r\n\r\n", call)

    def _send(self, handler: BaseHTTPRequestHandler, event: dict, call: SSECall) -> bool:
        return self._write(handler, f"data: {json.dumps(event)}\n\n".encode(), call)

    def _write(self, handler: BaseHTTPRequestHandler, data: bytes, call: SSECall) -> bool:
        return self._write_raw(handler, f"{len(data):x}\r\n".encode() + data + b"\r\n", call)

    @staticmethod
    def _write_raw(handler: BaseHTTPRequestHandler, data: bytes, call: SSECall) -> bool:
        try:
            handler.wfile.write(data)
            handler.wfile.flush()
            return True
        except OSError:
            call.client_closed_at = call.client_closed_at or time.monotonic()
            return False

    @staticmethod
    def _wait(sock: socket.socket, seconds: float, call: SSECall, until: threading.Event | None = None) -> bool:
        """Sleep up to `seconds`, watching for the client going away (False if it did)."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (until is not None and until.is_set()):
                return True
            readable, _, _ = select.select([sock], [], [], min(0.005, remaining))
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        call.client_closed_at = time.monotonic()
                        return False
                except OSError:
                    call.client_closed_at = time.monotonic()
                    return False
