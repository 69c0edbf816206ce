"""Model backends. Only the orchestrator calls them; one instance per process."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from .base import LLMBackend


@lru_cache(maxsize=None)
def get_backend(name: str | None = None) -> LLMBackend:
    name = name or settings.LLM_BACKEND
    if name == "simulated":
        from .simulated import SimulatedBackend

        return SimulatedBackend()
    if name == "bedrock":
        from .bedrock import BedrockBackend

        return BedrockBackend()
    if name == "openai":
        from .openai import OpenAICompatibleBackend

        return OpenAICompatibleBackend()
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    raise ValueError(f"unknown LLM backend {name!r}")
