"""Samples each watched process (RSS, CPU time) and the whole machine's CPU every half second, on a thread."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

INTERVAL = 0.5


@dataclass
class Sample:
    """One reading of one process."""

    t: float  # time.time()
    rss_mb: float
    cpu_s: float  # cumulative user + system seconds of the process tree


@dataclass
class Mark:
    """A phase boundary, with every process's CPU seconds and the machine's CPU times at that instant."""

    t: float
    phase: str
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_s: float = 0.0


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _read(proc: psutil.Process) -> tuple[float, float] | None:
    """RSS (MB) and CPU seconds of a process and its children, or None if it is gone."""
    rss = 0.0
    cpu = 0.0
    alive = False
    for p in _tree(proc):
        try:
            with p.oneshot():
                mem = p.memory_info().rss
                times = p.cpu_times()
        except psutil.Error:
            continue
        alive = True
        rss += mem / (1024 * 1024)
        cpu += times.user + times.system
    return (rss, cpu) if alive else None


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0)) + float(
        getattr(times, "softirq", 0.0)
    )


class Sampler:
    """Watches named processes until stopped; marks phases so that CPU share can be computed per phase."""

    def __init__(self, interval: float = INTERVAL):
        self.interval = interval
        self.procs: dict[str, psutil.Process] = {}
        self.samples: dict[str, list[Sample]] = {}
        self.marks: list[Mark] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        """Start sampling process ``pid`` (and its children) under ``name``."""
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return
        with self._lock:
            self.procs[name] = proc
            self.samples.setdefault(name, [])
        self._sample_one(name, proc, time.time())

    def unwatch(self, name: str) -> None:
        """Stop sampling ``name`` (its samples stay)."""
        with self._lock:
            proc = self.procs.pop(name, None)
        if proc is not None:
            self._sample_one(name, proc, time.time())

    def start(self) -> None:
        """Start the sampling thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def mark(self, phase: str) -> None:
        """Record a phase boundary: the phase ``phase`` starts now (use "" for an idle stretch)."""
        now = time.time()
        with self._lock:
            procs = dict(self.procs)
        cpu = {}
        for name, proc in procs.items():
            reading = _read(proc)
            if reading is not None:
                cpu[name] = reading[1]
            elif self.samples.get(name):
                cpu[name] = self.samples[name][-1].cpu_s  # exited since: its last reading (at most one interval old)
        with self._lock:
            self.marks.append(Mark(now, phase, cpu, _machine_busy_s()))

    def _sample_one(self, name: str, proc: psutil.Process, now: float) -> None:
        reading = _read(proc)
        if reading is None:
            return
        with self._lock:
            self.samples.setdefault(name, []).append(Sample(now, reading[0], reading[1]))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            with self._lock:
                procs = dict(self.procs)
            for name, proc in procs.items():
                self._sample_one(name, proc, now)

    # ------------------------------------------------------------------ figures

    def peak_rss_mb(
        self, names: list[str] | None = None, start: float = 0.0, end: float = float("inf")
    ) -> dict[str, float]:
        """The highest RSS seen of each process (within ``[start, end]``)."""
        out = {}
        with self._lock:
            for name, rows in self.samples.items():
                if names is not None and name not in names:
                    continue
                values = [s.rss_mb for s in rows if start <= s.t <= end]
                if values:
                    out[name] = round(max(values), 1)
        return out

    def mean_rss_mb(self, name: str, start: float, end: float) -> float | None:
        """The mean RSS of a process within ``[start, end]``."""
        with self._lock:
            values = [s.rss_mb for s in self.samples.get(name, []) if start <= s.t <= end]
        return sum(values) / len(values) if values else None

    def phase_cpu(self) -> dict[str, dict[str, Any]]:
        """Per phase: each process's CPU share (% of one core) and the rest of the machine's (background)."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            marks = list(self.marks)
        for begin, end in itertools.pairwise(marks):
            if not begin.phase:
                continue
            wall = end.t - begin.t
            if wall <= 0:
                continue
            shares = {}
            for name, cpu0 in begin.cpu_s.items():
                if name in end.cpu_s:
                    shares[name] = round(100 * (end.cpu_s[name] - cpu0) / wall, 1)
            machine = 100 * (end.machine_busy_s - begin.machine_busy_s) / wall
            ours = sum(shares.values())
            out[begin.phase] = {
                "wall_s": round(wall, 2),
                "cpu_pct": shares,
                "machine_cpu_pct": round(machine, 1),
                "background_cpu_pct": round(max(machine - ours, 0.0), 1),
            }
        return out

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """(time, RSS MB) of every process, for the plot."""
        with self._lock:
            return {name: [(s.t, s.rss_mb) for s in rows] for name, rows in self.samples.items()}
