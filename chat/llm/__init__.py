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
    raise ValueError(f"LLM backend {name!r} is not available in this build")
