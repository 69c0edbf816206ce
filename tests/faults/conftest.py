"""Faults injected into a real scaled stack of the suite's own (issue 11).

A private Redis and a private PostgreSQL (started here, on free ports, in scratch
directories), so they can be stopped, restarted and killed without touching the shared
servers other tests and engineers use. On them: daphne web processes and a Celery worker
started with bench.stack.ScaledStack, in scaled mode (REDIS_URL, DATABASE_URL), the
instant simulated model and the warm-up on, as in production.

Where redis-server or PostgreSQL's binaries are missing the tests are skipped with the
reason; under CI (CI=true) a missing binary fails them, as in tests/scaled.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from bench.stack import POSTGRES_BIN, PrivatePostgres, PrivateRedis, ScaledStack

DATABASE = "mangaassist_faults"
WORKER = "faults-worker"


def _require(service: str, available: bool, where: str) -> None:
    if available:
        return
    reason = f"the fault tests need {service} ({where}), which is not installed"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI runs every test)")
    pytest.skip(reason)


@dataclass
class FaultStack:
    """The stack under test, and the servers a test may break (each test leaves them running)."""

    stack: ScaledStack
    redis: PrivateRedis
    postgres: PrivatePostgres
    web: str  # the main web process's base URL (instant model)
    workdir: Path
    extra: dict[str, str] = field(default_factory=dict)  # other web processes by name -> base URL

    @property
    def database_url(self) -> str:
        return self.stack.env["DATABASE_URL"]

    def db(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url.replace("postgres://", "postgresql://"), autocommit=True)

    def start_worker(self) -> None:
        """A Celery worker on the default queue (prefetch, summaries): what fills the cache for the next turn."""
        self.stack.start(WORKER, sys.executable, "-m", "celery", "-A", "mangaassist", "worker", "--pool=solo",
                         "--concurrency=1", "--loglevel=INFO", "-Q", "mangaassist", "-n", "faults@%h",
                         "--without-heartbeat", "--without-gossip", "--without-mingle")
        self.stack.wait_for_log(WORKER, " ready.", timeout=90)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    _require("Redis", PrivateRedis.binary() is not None, "redis-server on the PATH")
    _require("PostgreSQL", PrivatePostgres.available(), f"initdb, pg_ctl and postgres in {POSTGRES_BIN}")
    workdir = tmp_path_factory.mktemp("faults")
    metrics_dir = workdir / "prometheus-multiproc"
    metrics_dir.mkdir()
    redis_server = PrivateRedis(workdir)
    postgres = PrivatePostgres()
    stack = ScaledStack(env={}, processes=[], logs=workdir)
    try:
        redis_server.start()
        postgres.start()
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": postgres.create_database(DATABASE),
            "LLM_BACKEND": "simulated",
            "LLM_SIMULATED_PROFILE": "instant",
            "CHAT_RATE_LIMIT_PER_IP": "1000",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("CELERY_BROKER_URL", None)  # the broker is REDIS_URL, as in the README's scaled mode
        env.pop("PROVISIONED_THROUGHPUT_ENABLED", None)
        # tests/conftest.py turns the warm-up off for the test process; the web processes keep the default (on).
        env.pop("MANGAASSIST_WARMUP", None)
        stack.env = env
        stack.manage("migrate", "--noinput")
        stack.manage("load_demo_catalog")
        web = stack.start_web("faults-web")
        faults = FaultStack(stack=stack, redis=redis_server, postgres=postgres, web=web, workdir=workdir)
        faults.start_worker()
        yield faults
    finally:
        stack.stop_all()
        redis_server.stop()
        postgres.stop()
