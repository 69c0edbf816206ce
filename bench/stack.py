"""Real processes for scaled mode: daphne web processes and Celery workers on Redis and PostgreSQL.

Shared by the scaled tests (tests/scaled) and the benchmarks that replay conversations through
the real WebSocket path (bench/speculation.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
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

    def start_web(self, name: str, extra_env: dict[str, str] | None = None, *,
                  launcher: tuple[str, ...] = ("-m", "daphne"), port: int | None = None, timeout: float = 30) -> str:
        """A daphne web process on `port` (a free one by default), once /healthz answers; its base URL.

        `extra_env` overrides the stack's environment for this process only (another model pace,
        another metrics directory). `launcher` replaces `-m daphne` (e.g. a profiling wrapper that
        takes daphne's arguments). The process warms up (index, intent model) before /healthz says
        ready, as in production, even where the test process turned its own warm-up off: cold, its
        first customer would pay seconds of intent-model training inside the first-token deadline.
        """
        port = port or free_port()
        process = self.start(name, sys.executable, *launcher, "-b", "127.0.0.1", "-p", str(port),
                             "mangaassist.asgi:application",
                             extra_env={"MANGAASSIST_WARMUP": "true", **(extra_env or {})})
        base = f"http://127.0.0.1:{port}"
        self.web_processes[base] = process
        deadline = time.monotonic() + timeout
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


# --- Private servers for fault tests: stopped, restarted and killed without touching shared ones ------------

POSTGRES_BIN = Path(os.environ.get("POSTGRES_BIN", "/usr/local/bin"))


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class PrivateRedis:
    """A redis-server of its own on a free port, in a scratch directory, without persistence.

    `stop()` and `start()` (again on the same port) stand in for a Redis outage; what it held
    is lost, as after a crash of a cache without persistence.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    def start(self) -> "PrivateRedis":
        binary = self.binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        log = open(self.workdir / f"redis-{self.port}.log", "a")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                         "--appendonly", "no", "--dir", str(self.workdir)],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: reachable(self.url, self.port), f"redis-server on port {self.port}", 15)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a scratch directory, a free port, trust auth, no fsync).

    Run as the `postgres` user when this process is root (initdb refuses root). `restart()` is
    `pg_ctl restart -m fast`: every open connection is cut, as in a failover or a restart.
    """

    port: int = field(default_factory=free_port)
    datadir: Path | None = None
    user: str = "postgres"

    @staticmethod
    def available() -> bool:
        return all((POSTGRES_BIN / name).exists() for name in ("initdb", "pg_ctl", "postgres"))

    @property
    def url(self) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{name}"

    def _as_owner(self, *command: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        assert self.datadir is not None
        # Always with -l: the server must not inherit our pipes (a restarted one would otherwise write to them).
        subprocess.run(self._as_owner(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.datadir / "data"), "-w",
                                      "-t", str(int(timeout)), "-l", str(self.datadir / "postgres.log"), *args),
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=timeout + 10)

    def start(self) -> "PrivatePostgres":
        import tempfile

        if self.datadir is None:
            self.datadir = Path(tempfile.mkdtemp(prefix="mangaassist-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.datadir, "postgres", "postgres")
            subprocess.run(self._as_owner(str(POSTGRES_BIN / "initdb"), "-D", str(self.datadir / "data"),
                                          "-U", self.user, "-A", "trust", "--no-sync", "-E", "UTF8",
                                          "--locale=C"),
                           check=True, capture_output=True, text=True, timeout=120)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._pg_ctl("start", "-o", options)
        return self

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: connections are cut, the server is back when this returns."""
        self._pg_ctl("restart", "-m", "fast")

    def stop_server(self) -> None:
        """`pg_ctl stop -m fast`, keeping the cluster: `start()` brings it back with its data."""
        self._pg_ctl("stop", "-m", "fast")

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        if self.datadir is None:
            return
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.datadir = None

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def log(self) -> str:
        path = (self.datadir / "postgres.log") if self.datadir else None
        return path.read_text() if path and path.exists() else ""
