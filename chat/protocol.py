"""The WebSocket protocol of DESIGN.md §4: validating client frames, building server frames.

Validation happens once, here, at the edge (`check_*`); everything behind it
assumes valid input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

CLIENT_TYPES = {"message", "stop", "resume", "client_metrics", "ping"}
PAGE_FIELDS = {"current_asin": str, "store_section": str, "browsing_history": list, "cart_asins": list}
MAX_ID_LENGTH = 64
MAX_PAGE_LIST = 20
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Control characters, and lone surrogates (a "\\ud800" JSON escape), which no database can store.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, message_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_id = message_id


@dataclass(frozen=True)
class ClientMessage:
    id: str
    text: str
    page: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClientResume:
    id: str
    after: int  # the index of the last delta the browser has (-1: none)
    chars: int | None  # how many characters of the answer it has (None: an older client that does not say)


@dataclass(frozen=True)
class ClientMetrics:
    id: str
    first_token_ms: float | None
    total_ms: float | None


def check_frame(raw: str | None, raw_bytes: bytes | None) -> dict[str, Any]:
    """Parse one text frame into a dict with a known `type`."""
    if raw is None:
        raise ProtocolError("invalid_message", "Frames must be JSON text, not binary.")
    if len(raw.encode("utf-8")) > settings.CHAT_MAX_FRAME_BYTES:
        raise ProtocolError("too_long", f"Frames are limited to {settings.CHAT_MAX_FRAME_BYTES} bytes.")
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise ProtocolError("invalid_message", "A frame must be a JSON object.")
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise ProtocolError("invalid_message", f"Unknown frame type; expected one of {sorted(CLIENT_TYPES)}.",
                            _safe_id(frame.get("id")))
    return frame


def _safe_id(value: Any) -> str | None:
    return value if isinstance(value, str) and _ID_RE.match(value) else None


def check_id(frame: dict[str, Any]) -> str:
    value = frame.get("id")
    if not isinstance(value, str) or not value:
        raise ProtocolError("invalid_message", "`id` is required: a string of letters, digits, _ . : or -.")
    if not _ID_RE.match(value):
        raise ProtocolError("invalid_message", f"`id` must be 1-{MAX_ID_LENGTH} letters, digits, _ . : or -.")
    return value


def _clean_text(value: str) -> str:
    return _CONTROL_RE.sub("", value).strip()


def check_page(value: Any, message_id: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", "`page` must be an object.", message_id)
    page: dict[str, Any] = {}
    for name, kind in PAGE_FIELDS.items():
        item = value.get(name)
        if item is None:
            continue
        if not isinstance(item, kind):
            raise ProtocolError("invalid_message", f"`page.{name}` must be a {kind.__name__}.", message_id)
        if kind is str:
            page[name] = _clean_text(item)[:100]
        else:
            page[name] = [_clean_text(x)[:100] for x in item[:MAX_PAGE_LIST] if isinstance(x, str)]
    return page


def check_message(frame: dict[str, Any]) -> ClientMessage:
    message_id = check_id(frame)
    text = frame.get("text")
    if not isinstance(text, str):
        raise ProtocolError("invalid_message", "`text` must be a string.", message_id)
    text = _clean_text(text)
    if not text:
        raise ProtocolError("invalid_message", "`text` is empty.", message_id)
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ProtocolError("too_long", f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
                            message_id)
    return ClientMessage(message_id, text, check_page(frame.get("page"), message_id))


def check_resume(frame: dict[str, Any]) -> ClientResume:
    message_id = check_id(frame)
    after = frame.get("after", -1)
    if isinstance(after, bool) or not isinstance(after, int) or after < -1:
        raise ProtocolError("invalid_message", "`after` must be the index of the last delta received (or -1).", message_id)
    chars = frame.get("chars")
    if chars is not None and (isinstance(chars, bool) or not isinstance(chars, int) or chars < 0):
        raise ProtocolError("invalid_message", "`chars` must be the number of characters of the answer received.",
                            message_id)
    return ClientResume(message_id, after, chars)


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if low <= value <= high else None


def check_client_metrics(frame: dict[str, Any]) -> ClientMetrics:
    """Browser timings; implausible values (negative, over 5 minutes, not numbers) are dropped."""
    message_id = check_id(frame)
    first = _number(frame.get("first_token_ms"), 0, 300_000)
    total = _number(frame.get("total_ms"), 0, 300_000)
    if first is not None and total is not None and total < first:
        total = None
    return ClientMetrics(message_id, first, total)


def frame(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def error_frame(code: str, message: str, message_id: str | None = None, retry_after: float | None = None) -> str:
    fields: dict[str, Any] = {"id": message_id, "code": code, "message": message}
    if retry_after is not None:
        fields["retry_after"] = round(retry_after, 3)
    return frame("error", **fields)
