"""A customer on the chat socket: one scripted conversation through the real WebSocket protocol.

Shared by the load benchmark (bench/load) and the speculation evaluation (bench/speculation.py).
It reads every frame the way the widget does and times, on the client side, the first delta,
each later delta and the `completed` frame of every message.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx
from websockets.asyncio.client import connect

TURN_TIMEOUT_SECONDS = 60.0
"""A message with no `completed` or `error` frame after this long is recorded as `timeout`."""


@dataclass
class TurnObservation:
    """What the client saw for one message (times in ms from the moment the frame was sent)."""

    turn: int
    text: str
    sent_at: float = 0.0  # time.perf_counter() when the message left
    ack_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float | None = None
    deltas: int = 0
    stream_ms: float | None = None  # first delta to last delta
    max_gap_ms: float | None = None  # the longest pause between two deltas
    keepalives: int = 0
    completed: dict[str, Any] | None = None  # the `completed` frame as received
    error: str | None = None  # the `error` frame's code, or `timeout`

    @property
    def metrics(self) -> dict[str, Any]:
        return (self.completed or {}).get("metrics") or {}

    @property
    def mean_gap_ms(self) -> float | None:
        """Mean time between two deltas as the client saw them."""
        if self.stream_ms is None or self.deltas < 2:
            return None
        return self.stream_ms / (self.deltas - 1)


async def session_cookie(base: str) -> str | None:
    """Open the store page as a browser does first: the socket then belongs to that session."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(base + "/")
        return response.cookies.get("sessionid")


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws/chat/"


async def converse(base: str, turns: list[dict[str, Any]], page: dict[str, Any] | None, *, think: float,
                   rng: random.Random, message_prefix: str, cookie: str | None = None,
                   keep_going: Callable[[], bool] = lambda: True, send_client_metrics: bool = False,
                   on_turn: Callable[[TurnObservation], Awaitable[None] | None] | None = None,
                   turn_timeout: float = TURN_TIMEOUT_SECONDS, typing: float = 0.0) -> list[TurnObservation]:
    """Send `turns` one after another on one socket, reading `think * U(0.8, 1.2)` seconds before each
    message after the first (the customer reads, then types), and `typing * U(0.8, 1.2)` seconds
    before the first: the widget opens its socket as the chat opens (or as the pointer reaches the
    launcher), then the customer types the question.

    `keep_going()` is asked before each message after the first: False ends the conversation early
    (a benchmark's time is up). `send_client_metrics` reports what was measured, as the widget does.
    """
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    observations: list[TurnObservation] = []
    async with connect(ws_url(base), origin=base, additional_headers=headers, max_size=2**22) as ws:
        for n, turn in enumerate(turns):
            if n or typing:
                await asyncio.sleep((think if n else typing) * rng.uniform(0.8, 1.2))
                if not keep_going():
                    break
            message_id = f"{message_prefix}-{n}"
            observation = TurnObservation(turn=n, text=turn["text"])
            observation.sent_at = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "id": message_id, "text": turn["text"],
                                      "page": page or {}}))
            try:
                await asyncio.wait_for(_read_answer(ws, observation), timeout=turn_timeout)
            except asyncio.TimeoutError:
                observation.error = "timeout"
            observations.append(observation)
            if send_client_metrics and observation.first_token_ms is not None and observation.total_ms is not None:
                await ws.send(json.dumps({"type": "client_metrics", "id": message_id,
                                          "first_token_ms": round(observation.first_token_ms, 1),
                                          "total_ms": round(observation.total_ms, 1)}))
            if on_turn is not None:
                result = on_turn(observation)
                if result is not None:
                    await result
            if observation.error == "timeout":
                break  # the socket is in an unknown state
    return observations


async def _read_answer(ws: Any, observation: TurnObservation) -> None:
    """Frames until this message's `completed` or `error`; times taken as each frame is read."""
    sent = observation.sent_at
    first_delta = last_delta = None
    while True:
        raw = await ws.recv()
        now = time.perf_counter()
        # Delta frames are the bulk: recognise them without parsing (the server writes compact JSON).
        if raw.startswith('{"type":"delta"'):
            if first_delta is None:
                first_delta = now
                observation.first_token_ms = (now - sent) * 1000
            elif last_delta is not None:
                gap = (now - last_delta) * 1000
                if observation.max_gap_ms is None or gap > observation.max_gap_ms:
                    observation.max_gap_ms = gap
            last_delta = now
            observation.deltas += 1
            continue
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "delta":  # written some other way: same handling
            if first_delta is None:
                first_delta = now
                observation.first_token_ms = (now - sent) * 1000
            last_delta = now
            observation.deltas += 1
        elif kind == "ack":
            observation.ack_ms = (now - sent) * 1000
        elif kind == "keepalive":
            observation.keepalives += 1
        elif kind == "completed":
            observation.total_ms = (now - sent) * 1000
            observation.completed = frame
            break
        elif kind == "error":
            observation.error = frame.get("code") or "error"
            break
    if first_delta is not None and last_delta is not None:
        observation.stream_ms = (last_delta - first_delta) * 1000


@dataclass
class ConversationRecord:
    """One scripted conversation as one customer ran it."""

    script: str
    user: int
    base: str
    started_at: float
    turns: list[TurnObservation] = field(default_factory=list)
    script_turns: list[dict[str, Any]] = field(default_factory=list, repr=False)  # what was scripted
    finished: bool = False  # every scripted turn was sent and answered
    error: str | None = None  # the socket failed (connect refused, closed by the server)
