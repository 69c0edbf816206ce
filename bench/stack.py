"""Real processes for scaled mode: daphne web processes and Celery workers on Redis and PostgreSQL.

Shared by the scaled tests (tests/scaled) and the benchmarks that replay conversations through
the real WebSocket path (bench/speculation.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
TEST_DATABASE = "mangaassist_scaled_test"


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ScaledStack:
    env: dict[str, str]
    processes: list[subprocess.Popen]
    logs: Path
    web_processes: dict[str, subprocess.Popen] = field(default_factory=dict)  # base URL -> its daphne

    def manage(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, name: str, *command: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(command, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start_web(self, name: str, extra_env: dict[str, str] | None = None) -> str:
        """A daphne web process on a free port, once /healthz answers; its base URL.

        `extra_env` overrides the stack's environment for this process only (another model pace,
        another metrics directory).
        """
        port = free_port()
        process = self.start(name, sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "mangaassist.asgi:application", extra_env=extra_env)
        base = f"http://127.0.0.1:{port}"
        self.web_processes[base] = process
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # not up yet, or still warming up (503)
        raise RuntimeError(f"{name} did not start: {(self.logs / f'{name}.log').read_text()[-2000:]}")

    def wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        """Until process `name` has logged `text` (e.g. a Celery worker's "ready.")."""
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not log {text!r}: {self.log(name)[-2000:]}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop(self, process: subprocess.Popen) -> None:
        """Stop one process this stack started (the others keep running)."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process in self.processes:
            self.processes.remove(process)
        for base in [base for base, web in self.web_processes.items() if web is process]:
            del self.web_processes[base]

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def fresh_database(name: str = TEST_DATABASE) -> str:
    """Drop and create database `name` on the PostgreSQL server; its URL."""
    import psycopg

    with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str) -> None:
    """Drop database `name` (after a run), if it is there."""
    import psycopg

    with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
