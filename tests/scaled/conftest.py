"""Scaled mode for real: PostgreSQL, Redis, several daphne processes and a Celery worker.

These tests start real processes with REDIS_URL and DATABASE_URL set. Where Redis
or PostgreSQL cannot be reached they are skipped with the reason printed, except
under CI (CI=true), where every test must run and a missing service fails.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from bench.stack import POSTGRES_URL, REDIS_URL, TEST_DATABASE, ScaledStack, drop_database, fresh_database
from tests.conftest import require_service


@pytest.fixture(scope="session")
def scaled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledStack]:
    require_service("Redis", REDIS_URL, 6379)
    require_service("PostgreSQL", POSTGRES_URL, 5432)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    metrics_dir = tmp_path_factory.mktemp("prometheus-multiproc")
    database = f"{TEST_DATABASE}_{os.getpid()}"  # two runs at once on one server never share a database
    env = {
        **os.environ,
        # Every web and worker process writes its metrics here; /metrics on any of them adds them up.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": fresh_database(database),
        "LLM_BACKEND": "simulated",
        "LLM_SIMULATED_PROFILE": "instant",
        "PYTHONUNBUFFERED": "1",
    }
    stack = ScaledStack(env=env, processes=[], logs=tmp_path_factory.mktemp("scaled-logs"))
    stack.manage("migrate", "--noinput")
    stack.manage("load_demo_catalog")
    try:
        yield stack
    finally:
        stack.stop_all()
        drop_database(database)
