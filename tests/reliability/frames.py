"""What a valid server frame is (DESIGN.md §4), checked field by field, and a client that checks every frame."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from tests.conftest import ChatClient, open_chat

# DESIGN.md §4 lists these codes as "codes include"; the consumer adds conversation_not_found (a
# `conversation=` query parameter of another session) and, for `resume`, unknown_message and interrupted.
ERROR_CODES = {"invalid_json", "invalid_message", "too_long", "rate_limited", "busy", "upstream_unavailable",
               "internal", "conversation_not_found", "unknown_message", "interrupted"}
TERMINAL = {"completed", "stopped", "error"}
METRICS_FIELDS = {"first_token_ms", "total_ms", "prompt_tokens", "output_tokens", "compression_ratio",
                  "prefetch_hit", "route", "intent"}
PRODUCT_FIELDS = {"sku": str, "title": str, "title_ja": str, "authors": list, "price": int, "in_stock": bool,
                  "url": str}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _message_id(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 64


def check_server_frame(frame: Any) -> None:
    """Raise AssertionError unless `frame` is one of DESIGN.md §4's server frames, with its fields."""
    assert isinstance(frame, dict), frame
    kind = frame.get("type")
    if kind in {"pong", "keepalive"}:
        assert frame == {"type": kind}, frame
    elif kind == "ack":
        assert set(frame) == {"type", "id", "conversation"} and _message_id(frame["id"]), frame
        uuid.UUID(frame["conversation"])
    elif kind == "delta":
        assert set(frame) == {"type", "id", "index", "text"} and _message_id(frame["id"]), frame
        assert isinstance(frame["index"], int) and frame["index"] >= 0 and isinstance(frame["text"], str), frame
    elif kind == "completed":
        assert set(frame) == {"type", "id", "text", "products", "metrics"} and _message_id(frame["id"]), frame
        assert isinstance(frame["text"], str) and isinstance(frame["products"], list), frame
        for product in frame["products"]:
            for name, kind_of in PRODUCT_FIELDS.items():
                assert isinstance(product.get(name), kind_of), (name, product)
            assert all(isinstance(a, str) for a in product["authors"]) and product["price"] >= 0, product
        assert isinstance(frame["metrics"], dict), frame
        if frame["metrics"]:  # a live answer; a replayed one may carry what was saved
            assert METRICS_FIELDS <= set(frame["metrics"]), frame["metrics"]
    elif kind == "stopped":
        assert set(frame) == {"type", "id"} and _message_id(frame["id"]), frame
    elif kind == "error":
        assert {"type", "id", "code", "message"} <= set(frame) <= {"type", "id", "code", "message", "retry_after"}, frame
        assert frame["id"] is None or _message_id(frame["id"]), frame
        assert frame["code"] in ERROR_CODES, frame
        assert isinstance(frame["message"], str) and frame["message"], frame
        if "retry_after" in frame:
            assert _number(frame["retry_after"]) and frame["retry_after"] >= 0, frame
    else:
        raise AssertionError(f"unknown server frame type: {frame!r}")


class CheckedClient(ChatClient):
    """A ChatClient that checks every frame it receives, and the order of each answer's frames."""

    def __init__(self, client: ChatClient) -> None:
        super().__init__(client.ws)
        self.frames: list[dict[str, Any]] = []
        self.next_index: dict[str, int] = {}
        self.ended: set[str] = set()

    async def send(self, frame: dict[str, Any] | str) -> None:
        """Any text frame, the empty one included (WebsocketCommunicator.send_to refuses it)."""
        text = frame if isinstance(frame, str) else json.dumps(frame)
        self._note_resume(text)
        await self.ws.send_input({"type": "websocket.receive", "text": text})

    def _note_resume(self, text: str) -> None:
        """A `resume {id, after}` replays the answer from delta `after + 1`, and ends it again."""
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            return
        if isinstance(frame, dict) and frame.get("type") == "resume" and isinstance(frame.get("id"), str):
            after = frame.get("after", -1)
            if isinstance(after, int) and not isinstance(after, bool) and after >= -1:
                self.next_index[frame["id"]] = after + 1
                self.ended.discard(frame["id"])

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        raw = await self.ws.receive_from(timeout=timeout)  # asserts a websocket.send: a close fails here
        frame = json.loads(raw)
        check_server_frame(frame)
        self._check_sequence(frame)
        self.frames.append(frame)
        return frame

    def _check_sequence(self, frame: dict[str, Any]) -> None:
        message_id = frame.get("id")
        if frame["type"] == "ack":
            self.next_index[message_id] = 0  # a resent id is answered again, from its first delta or saved
            self.ended.discard(message_id)
        elif frame["type"] == "delta":
            expected = self.next_index.get(message_id, 0)
            assert frame["index"] == expected, f"delta {frame['index']} of {message_id} after {expected - 1}"
            assert message_id not in self.ended, f"delta of {message_id} after its end"
            self.next_index[message_id] = expected + 1
        elif frame["type"] in {"completed", "stopped"}:
            assert message_id not in self.ended, f"a second ending for {message_id}: {frame}"
            self.ended.add(message_id)

    async def ping(self, timeout: float = 10, *, pongs: int = 1) -> list[dict[str, Any]]:
        """Everything up to the pong: every frame the server sent before it handled the ping.

        `pongs`: how many pongs to wait for (2 when a ping was just sent as a frame under test).
        """
        await self.send({"type": "ping"})
        frames: list[dict[str, Any]] = []
        for _ in range(pongs):
            frames += await self.until("pong", timeout=timeout)
        return frames


async def open_checked(path: str = "/ws/chat/", headers: list[tuple[bytes, bytes]] | None = None) -> CheckedClient:
    return CheckedClient(await open_chat(path, headers))
