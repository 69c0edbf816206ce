"""The `local` backend: a real SmolLM2 generation in-process, and llama.cpp's own server as an OpenAI peer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from chat.llm.base import LLMRequest, Message, Route, TextDelta, Usage

try:
    import llama_cpp  # noqa: F401
except ImportError:
    if os.environ.get("CI", "").lower() == "true":
        raise  # CI runs every test: make test installs requirements-local.txt
    pytest.skip("llama-cpp-python is not installed (make install-local)", allow_module_level=True)


def _request(question: str) -> LLMRequest:
    return LLMRequest(system="You are the assistant of a manga store. Answer briefly.",
                      stable_context="Conversation so far (summary): the customer likes shonen.",
                      volatile_context="Store data:\n[B0X] Naruto by Masashi Kishimoto; 72 vols; ¥616/vol, in stock.",
                      messages=[Message("user", question)], max_tokens=24, route=Route("local", "smollm2"))


class LocalBackendTests:
    async def test_real_generation_streams_tokens_and_reuses_the_prompt_prefix(self) -> None:
        from chat.llm.local import LocalBackend

        backend = LocalBackend()
        first = [e async for e in backend.stream(_request("Is Naruto in stock?"))]
        second = [e async for e in backend.stream(_request("How much is one volume?"))]

        text = "".join(e.text for e in first if isinstance(e, TextDelta))
        assert text.strip() and sum(isinstance(e, TextDelta) for e in first) > 1
        usage_first, usage_second = first[-1], second[-1]
        assert isinstance(usage_first, Usage) and usage_first.input_tokens > 40 and usage_first.output_tokens > 0
        # The follow-up shares the system prompt, summary and store data: llama.cpp's KV cache serves them.
        assert isinstance(usage_second, Usage) and usage_second.cache_read_tokens > 40

    async def test_missing_model_file_is_a_clear_error(self, settings) -> None:  # type: ignore[no-untyped-def]
        from chat.llm.base import LLMError
        from chat.llm.local import LocalBackend

        settings.LOCAL_MODEL_PATH = "/nonexistent/model.gguf"
        with pytest.raises(LLMError, match="is not a file"):
            [e async for e in LocalBackend().stream(_request("hi"))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServerPeerTests:
    async def test_llama_cpp_server_is_a_real_openai_compatible_peer(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        from chat.llm.local import model_path
        from chat.llm.openai import OpenAICompatibleBackend

        port = _free_port()
        # llama_cpp.server reads HOST and PORT from the environment before its flags: keep ours out.
        env = {k: v for k, v in os.environ.items() if k not in {"HOST", "PORT"}}
        log = tmp_path / "llama-server.log"
        server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path()),
                                   "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                                  stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        try:
            base = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            assert server.poll() is None, log.read_text()[-2000:]
            events = [e async for e in OpenAICompatibleBackend(base_url=base, model="smollm2").stream(_request("Hello!"))]
            assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
            assert sum(isinstance(e, TextDelta) for e in events) > 1  # streamed, not one blob
        finally:
            server.terminate()
            server.wait(timeout=10)


@pytest.mark.django_db(transaction=True)
class LocalEndToEndTests:
    async def test_store_chat_streams_through_the_local_model(self, demo_catalog: None) -> None:
        from chat.consumers import ChatConsumer
        from chat.llm.local import LocalBackend
        from chat.orchestrator import Orchestrator
        from tests.conftest import open_chat

        ChatConsumer.orchestrator = Orchestrator(backend=LocalBackend())
        chat = await open_chat()
        frames = await chat.ask("Is Naruto in stock?", "l1")
        await chat.ws.disconnect()
        deltas = [f for f in frames if f["type"] == "delta"]
        assert frames[-1]["type"] == "completed" and len(deltas) > 1
        assert frames[-1]["text"] == "".join(d["text"] for d in deltas)
        assert frames[-1]["metrics"]["backend"] == "local" and frames[-1]["metrics"]["output_tokens"] > 0
