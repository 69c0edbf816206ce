"""Scaled mode for real: PostgreSQL, Redis, several daphne processes and a Celery worker.

These tests start real processes with REDIS_URL and DATABASE_URL set. Where Redis
or PostgreSQL cannot be reached they are skipped with the reason printed, except
under CI (CI=true), where every test must run and a missing service fails.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from bench.stack import POSTGRES_URL, REDIS_URL, TEST_DATABASE, ScaledStack, drop_database, fresh_database
from tests.conftest import require_service


@contextmanager
def scaled_stack_on(redis_url: str, database: str, env: dict[str, str], logs: Path) -> Iterator[ScaledStack]:
    """A stack on Redis `redis_url` (flushed first) and a fresh, migrated PostgreSQL `database` with
    the demo catalog; its processes stopped and the database dropped afterwards."""
    require_service("Redis", redis_url, 6379)
    require_service("PostgreSQL", POSTGRES_URL, 5432)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    stack = ScaledStack(env={**env, "REDIS_URL": redis_url, "DATABASE_URL": fresh_database(database),
                             "PYTHONUNBUFFERED": "1"}, processes=[], logs=logs)
    try:
        stack.manage("migrate", "--noinput")
        stack.manage("load_demo_catalog")
        yield stack
    finally:
        stack.stop_all()
        drop_database(database)


@pytest.fixture(scope="session")
def scaled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledStack]:
    env = {
        **os.environ,
        # Every web and worker process writes its metrics here; /metrics on any of them adds them up.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus-multiproc")),
        "LLM_BACKEND": "simulated",
        "LLM_SIMULATED_PROFILE": "instant",
    }
    database = f"{TEST_DATABASE}_{os.getpid()}"  # two runs at once on one server never share a database
    with scaled_stack_on(REDIS_URL, database, env, tmp_path_factory.mktemp("scaled-logs")) as stack:
        yield stack
