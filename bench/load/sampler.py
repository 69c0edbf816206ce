"""CPU and memory of every process a benchmark pass involves, sampled with psutil."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class ProcessUsage:
    """One process (or a process and its children, e.g. a Celery worker's pool) over a pass."""

    name: str
    cpu_percent: list[float] = field(default_factory=list)  # 100 = one core busy
    rss_mb: list[float] = field(default_factory=list)
    shared: bool = False  # also serves others on this machine (the system's Redis and PostgreSQL)

    def summary(self) -> dict[str, float | str | bool]:
        cpu = self.cpu_percent or [0.0]
        rss = self.rss_mb or [0.0]
        return {"name": self.name, "cpu_mean_percent": round(sum(cpu) / len(cpu), 1),
                "cpu_max_percent": round(max(cpu), 1), "rss_max_mb": round(max(rss), 1),
                "rss_mean_mb": round(sum(rss) / len(rss), 1), "shared": self.shared}


class UsageSampler:
    """Samples the given processes every `interval` seconds on a background thread, until stopped."""

    def __init__(self, pids: dict[str, int], *, interval: float = 1.0, include_system_services: bool = False,
                 with_children: tuple[str, ...] = ("worker",)) -> None:
        """`pids`: name -> process id. A process whose name starts with one of `with_children` is
        counted with its children (a Celery worker's pool); the others alone."""
        self.interval = interval
        self._with_children = with_children
        self.usage: dict[str, ProcessUsage] = {}
        self._groups: dict[str, list[psutil.Process]] = {}
        for name, pid in {"load generator": os.getpid(), **pids}.items():
            try:
                self._groups[name] = [psutil.Process(pid)]
                self.usage[name] = ProcessUsage(name)
            except psutil.NoSuchProcess:
                continue
        if include_system_services:
            for label, names in (("redis-server (shared)", {"redis-server"}), ("postgresql (shared)", {"postgres"})):
                found = [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]
                if found:
                    self._groups[label] = found
                    self.usage[label] = ProcessUsage(label, shared=True)
        self._known: dict[tuple[str, int], psutil.Process] = {}
        self.machine_cpu_percent: list[float] = []  # every process on the machine (100 = one core)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-sampler", daemon=True)

    def __enter__(self) -> "UsageSampler":
        psutil.cpu_percent(None)
        for name, processes in self._groups.items():
            self._members(name, processes)  # primes every process: readings start with the first sample
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summaries(self) -> list[dict[str, float | str | bool]]:
        """Per process, then "other work on this machine": everything else the sampler saw the CPUs do
        (the machine is shared; a busy neighbour slows every figure of the pass)."""
        rows = [usage.summary() for usage in self.usage.values()]
        if self.machine_cpu_percent:
            ours = [sum(u.cpu_percent[n] for u in self.usage.values() if n < len(u.cpu_percent))
                    for n in range(len(self.machine_cpu_percent))]
            other = [max(0.0, total - mine) for total, mine in zip(self.machine_cpu_percent, ours)]
            rows.append({"name": "other work on this machine", "cpu_mean_percent": round(sum(other) / len(other), 1),
                         "cpu_max_percent": round(max(other), 1), "rss_max_mb": None, "rss_mean_mb": None,
                         "shared": True})
        return rows

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.machine_cpu_percent.append(psutil.cpu_percent(None) * (psutil.cpu_count() or 1))
            for name, processes in self._groups.items():
                cpu = rss = 0.0
                for process in self._members(name, processes):
                    try:
                        cpu += process.cpu_percent(None)
                        rss += process.memory_info().rss / 2**20
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                self.usage[name].cpu_percent.append(cpu)
                self.usage[name].rss_mb.append(rss)

    def _members(self, name: str, processes: list[psutil.Process]) -> list[psutil.Process]:
        """The group's processes (with their children where asked), each measured by its own Process
        object from the sample after the one it first appeared in."""
        members = []
        for process in processes:
            try:
                family = [process, *process.children(recursive=True)] if name.startswith(self._with_children) \
                    else [process]
            except psutil.NoSuchProcess:
                continue
            for member in family:
                known = self._known.get((name, member.pid))
                if known is None:
                    known = self._known[(name, member.pid)] = psutil.Process(member.pid) if member is not process \
                        else member
                    _prime(known)  # its first reading comes at the next sample
                    continue
                members.append(known)
        return members


def _prime(process: psutil.Process) -> None:
    try:
        process.cpu_percent(None)  # the first call only starts the measurement
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def machine() -> dict[str, str | int | float]:
    """What ran the benchmark: cores, memory, OS, Python."""
    import platform

    processor = platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": psutil.cpu_count() or 0, "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "processor": processor, "load_average_at_start": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
