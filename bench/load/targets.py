"""The servers a load pass runs against: MangaAssist embedded or scaled, and the model upstreams."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.stack import POSTGRES_URL, REDIS_URL, ScaledStack, fresh_database, reachable

ROOT = Path(__file__).resolve().parents[2]
BENCH_REDIS = REDIS_URL.rsplit("/", 1)[0] + "/10"  # the load benchmark's own Redis database
BENCH_DATABASE = "mangaassist_bench_load"

# Every pass: all load comes from one address, so the per-IP flood limit is lifted; quiet logs.
COMMON_ENV = {
    "CHAT_RATE_LIMIT_PER_IP": "1000000",
    "CHAT_RATE_LIMIT_PER_CONNECTION": "1000",
    "LOG_LEVEL": "WARNING",
    "DJANGO_LOG_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
    "DJANGO_DEBUG": "false",
    # As in production: each web process warms up (index, intent model, GC freeze) before /healthz is 200.
    "MANGAASSIST_WARMUP": "true",
}

PROFILES = ("simulated", "instant", "bedrock-fake", "openai-fake", "local")


def profile_env(profile: str, upstream_url: str | None = None) -> dict[str, str]:
    """The model backend of a profile (the upstream URL for the HTTP ones)."""
    if profile == "simulated":
        return {"LLM_BACKEND": "simulated", "LLM_SIMULATED_PROFILE": "bedrock"}
    if profile == "instant":
        return {"LLM_BACKEND": "simulated", "LLM_SIMULATED_PROFILE": "instant"}
    if profile == "bedrock-fake":
        return {"LLM_BACKEND": "bedrock", "BEDROCK_ENDPOINT_URL": upstream_url or "", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_EC2_METADATA_DISABLED": "true"}
    if profile == "openai-fake":
        return {"LLM_BACKEND": "openai", "OPENAI_BASE_URL": upstream_url or "", "OPENAI_MODEL": "bench"}
    if profile == "local":
        # A CPU model: seconds per prefill, so the deadlines are widened and the answers kept short.
        return {"LLM_BACKEND": "local", "LLM_FIRST_TOKEN_DEADLINE_SECONDS": "120", "LLM_STALL_SECONDS": "60",
                "LLM_MAX_OUTPUT_TOKENS": "48"}
    raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")


@dataclass
class Target:
    """MangaAssist as a pass sees it: the web processes' base URLs and every process to sample."""

    mode: str
    bases: list[str]
    stack: ScaledStack
    pids: dict[str, int] = field(default_factory=dict)
    profiles: list[Path] = field(default_factory=list)  # where profiled web processes write (--profile-web)

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            if self.mode == "scaled":
                from bench.stack import drop_database

                drop_database(BENCH_DATABASE)

    def _stop(self) -> None:
        if self.profiles:
            import signal

            for process in self.stack.web_processes.values():
                process.send_signal(signal.SIGUSR1)  # bench/load/profiled_web.py writes its profile and exits
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(p.with_suffix(".txt").exists() for p in self.profiles):
                time.sleep(0.2)
        self.stack.stop_all()


def _web(stack: ScaledStack, name: str, profile_dir: Path | None, profiles: list[Path]) -> str:
    """A daphne process; under cProfile when `profile_dir` is given."""
    if profile_dir is None:
        return stack.start_web(name)
    profile_dir.mkdir(parents=True, exist_ok=True)
    out = profile_dir / f"{name}.prof"
    profiles.append(out)
    return stack.start_web(name, {"BENCH_PROFILE_OUT": str(out)}, launcher=("-m", "bench.load.profiled_web"))


@dataclass
class Upstream:
    """A model server in its own process (bench/load/upstream.py)."""

    kind: str
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def upstream_start(kind: str, *args: str, logs: Path) -> Upstream:
    log = open(logs / f"upstream-{kind}.log", "w+")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "bench.load.upstream", kind, *args], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = (logs / f"upstream-{kind}.log").read_text()
        if "READY " in text:
            return Upstream(kind, text.split("READY ", 1)[1].split()[0], process)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the {kind} upstream did not start: {(logs / f'upstream-{kind}.log').read_text()[-2000:]}")


class EmbeddedTemplate:
    """A migrated SQLite database with the demo catalog and store, copied fresh for every pass."""

    def __init__(self, logs: Path) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mangaassist-bench-db-"))
        self.path = self.directory / "template.sqlite3"
        env = {**os.environ, **COMMON_ENV, "SQLITE_PATH": str(self.path)}
        for name in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(name, None)
        stack = ScaledStack(env=env, processes=[], logs=logs)
        stack.manage("migrate", "--noinput", "-v0")
        stack.manage("load_demo_catalog")
        stack.manage("load_demo_store")
        self._count = 0

    def copy(self) -> Path:
        self._count += 1
        path = self.directory / f"pass-{self._count}.sqlite3"
        shutil.copyfile(self.path, path)
        return path


def embedded_start(*, template: EmbeddedTemplate, pipeline: str, env: dict[str, str], logs: Path,
                   name: str, profile_dir: Path | None = None) -> Target:
    """One daphne, nothing else: SQLite, in-memory channel layer, local-memory cache, in-process tasks."""
    full_env = {**os.environ, **COMMON_ENV, **env, "CHAT_PIPELINE": pipeline, "SQLITE_PATH": str(template.copy())}
    for variable in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "CELERY_BROKER_URL"):
        full_env.pop(variable, None)
    stack = ScaledStack(env=full_env, processes=[], logs=logs)
    profiles: list[Path] = []
    base = _web(stack, f"{name}-web", profile_dir, profiles)
    return Target("embedded", [base], stack, {"web (daphne)": stack.web_processes[base].pid}, profiles)


def scaled_available() -> str | None:
    """None if Redis and PostgreSQL answer; otherwise why scaled mode cannot run."""
    for service, url, port in (("Redis", REDIS_URL, 6379), ("PostgreSQL", POSTGRES_URL, 5432)):
        if not reachable(url, port):
            return f"scaled mode needs {service} at {url}, which is not reachable"
    return None


def scaled_start(*, pipeline: str, env: dict[str, str], logs: Path, name: str, webs: int = 2,
                 speculation: bool = True, profile_dir: Path | None = None) -> Target:
    """PostgreSQL (a fresh database), Redis (DB 10, flushed), a Celery worker and `webs` daphne processes."""
    import redis

    redis.Redis.from_url(BENCH_REDIS).flushdb()
    full_env = {**os.environ, **COMMON_ENV, **env, "CHAT_PIPELINE": pipeline, "REDIS_URL": BENCH_REDIS,
                "DATABASE_URL": fresh_database(BENCH_DATABASE),
                "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="mangaassist-bench-metrics-")}
    full_env.pop("CELERY_BROKER_URL", None)
    stack = ScaledStack(env=full_env, processes=[], logs=logs)
    stack.manage("migrate", "--noinput", "-v0")
    stack.manage("load_demo_catalog")
    stack.manage("load_demo_store")
    if not speculation:
        # As a PM would switch it off: the settings row (its signal invalidates every process's copy).
        stack.manage("shell", "-c", (
            "from prefetch.models import PrefetchSettings\n"
            "from prefetch.services import transitions_starting_values_install\n"
            "transitions_starting_values_install()\n"
            "row = PrefetchSettings.objects.get()\n"
            "row.speculation_enabled = False\n"
            "row.save()\n"))
    worker = stack.start(f"{name}-worker", sys.executable, "-m", "celery", "-A", "mangaassist", "worker",
                         "--concurrency=2", "--loglevel=INFO", "-Q", "mangaassist,mangaassist.speculation")
    pids = {"worker (celery, with its pool)": worker.pid}
    bases = []
    profiles: list[Path] = []
    for n in range(webs):
        base = _web(stack, f"{name}-web{n + 1}", profile_dir, profiles)
        bases.append(base)
        pids[f"web{n + 1} (daphne)"] = stack.web_processes[base].pid
    stack.wait_for_log(f"{name}-worker", " ready.", timeout=60)
    return Target("scaled", bases, stack, pids, profiles)
