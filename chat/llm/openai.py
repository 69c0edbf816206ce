"""Any OpenAI-compatible streaming server (vLLM, llama.cpp server, Ollama) over SSE, with httpx.

One pooled async client per process. `stream_options.include_usage` asks for the
final usage chunk (prompt, completion and cached prompt tokens). Closing the
iterator closes the response, and with it the upstream generation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import httpx
from django.conf import settings

from .base import LLMError, LLMRequest, LLMStreamError, LLMThrottled, LLMUnavailable, StreamEvent, TextDelta, Usage

_clients: dict[str, httpx.AsyncClient] = {}


def chat_messages(request: LLMRequest) -> list[dict[str, str]]:
    """System prompt and summary first (the stable prefix servers cache), then context, turns, message."""
    system = request.system + ("\n\n" + request.stable_context if request.stable_context else "")
    if request.volatile_context:
        system += "\n\n" + request.volatile_context
    messages = [{"role": "system", "content": system}] + [{"role": m.role, "content": m.text} for m in request.messages]
    if request.prefill:
        # Continuing a cut answer: servers that support it (vLLM, llama.cpp) continue a final assistant message.
        messages.append({"role": "assistant", "content": request.prefill})
    return messages


class OpenAICompatibleBackend:
    name = "openai"

    def __init__(self, *, base_url: str | None = None, model: str | None = None) -> None:
        base = base_url or settings.OPENAI_BASE_URL
        if not base:
            raise LLMError("OPENAI_BASE_URL is not set: point it at an OpenAI-compatible server (…/v1)")
        self.base_url = base.rstrip("/")
        self.model = model or settings.OPENAI_MODEL or "default"

    def _client(self) -> httpx.AsyncClient:
        # One client per event loop (an httpx client belongs to the loop that made it); connections are reused.
        key = f"{self.base_url}|{id(asyncio.get_running_loop())}"
        client = _clients.get(key)
        if client is None or client.is_closed:
            headers = {"Authorization": f"Bearer {settings.OPENAI_API_KEY}"} if settings.OPENAI_API_KEY else {}
            client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers,
                timeout=httpx.Timeout(connect=settings.OPENAI_TIMEOUT_SECONDS, read=settings.LLM_STALL_SECONDS + 5,
                                      write=10, pool=5),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
            _clients[key] = client
        return client

    def payload(self, request: LLMRequest) -> dict[str, Any]:
        return {
            "model": self.model if request.route.name != "secondary" else request.route.model_id,
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens,
            "temperature": settings.LLM_TEMPERATURE,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        sent_text = False
        try:
            async with self._client().stream("POST", "/chat/completions", json=self.payload(request)) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise self._status_error(response, body)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise LLMStreamError(f"server reported an error mid-stream: {chunk['error']}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            sent_text = True
                            yield TextDelta(text)
                    usage = chunk.get("usage")
                    if usage:
                        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                        yield Usage(input_tokens=usage.get("prompt_tokens", 0),
                                    output_tokens=usage.get("completion_tokens", 0), cache_read_tokens=cached)
        except LLMError:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise LLMUnavailable(f"cannot reach {self.base_url}: {exc}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
            error = LLMStreamError if sent_text else LLMUnavailable
            raise error(f"the connection to {self.base_url} broke: {type(exc).__name__}") from exc
        except json.JSONDecodeError as exc:
            raise LLMStreamError(f"{self.base_url} sent a malformed event") from exc

    @staticmethod
    def _status_error(response: httpx.Response, body: str) -> LLMError:
        retry_after = response.headers.get("retry-after")
        seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        if response.status_code == 429:
            return LLMThrottled(f"rate limited by the model server: {body}", retry_after=seconds)
        if response.status_code >= 500:
            return LLMUnavailable(f"model server error {response.status_code}: {body}", retry_after=seconds)
        return LLMError(f"model server refused the request ({response.status_code}): {body}")
