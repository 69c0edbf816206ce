"""Scaled mode for real: PostgreSQL, Redis, several daphne processes and a Celery worker.

These tests start real processes with REDIS_URL and DATABASE_URL set. Where Redis
or PostgreSQL cannot be reached they are skipped with the reason printed, except
under CI (CI=true), where every test must run and a missing service fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
TEST_DATABASE = "mangaassist_scaled_test"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _require(service: str, url: str, port: int) -> None:
    if _reachable(url, port):
        return
    reason = f"scaled mode needs {service} at {url}, which is not reachable"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI runs every test)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ScaledStack:
    env: dict[str, str]
    processes: list[subprocess.Popen]
    logs: Path

    def manage(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, name: str, *command: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(command, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start_web(self, name: str) -> str:
        port = free_port()
        self.start(name, sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                   "mangaassist.asgi:application")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start: {(self.logs / f'{name}.log').read_text()[-2000:]}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _fresh_database() -> str:
    import psycopg

    with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + TEST_DATABASE


@pytest.fixture(scope="session")
def scaled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledStack]:
    _require("Redis", REDIS_URL, 6379)
    _require("PostgreSQL", POSTGRES_URL, 5432)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    metrics_dir = tmp_path_factory.mktemp("prometheus-multiproc")
    env = {
        **os.environ,
        # Every web and worker process writes its metrics here; /metrics on any of them adds them up.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": _fresh_database(),
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
