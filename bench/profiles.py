"""Record services with py-spy during saturation and summarize the collapsed stacks it writes.

``python -m bench --profile-dir DIR`` records each service (``--format raw``: one collapsed stack
per line with its sample count) while the saturation steps run; ``python -m bench.profiles FILE``
prints the busiest functions (self and inclusive) and files. py-spy is not a dependency of the
project: install it anywhere (``pip install py-spy``) and pass ``--py-spy PATH`` or put it on PATH.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_py_spy(explicit: str | None) -> str | None:
    """The py-spy executable to use, or None."""
    if explicit:
        return explicit if Path(explicit).exists() else None
    for candidate in (shutil.which("py-spy"), "/tmp/pyspy/bin/py-spy"):  # noqa: S108 - documented ad-hoc venv
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _stop_recorders(
    running: dict[str, tuple[subprocess.Popen[bytes], Path]], stopping: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """SIGINT every recorder so that it writes its file (``stopping`` hears each name as it is asked), wait for
    each (SIGKILL after 30 s), forget them all; return the files written by name."""
    written = {}
    for name, (process, out) in running.items():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        if stopping is not None:
            stopping(name)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if out.exists():
            written[name] = out
    running.clear()
    return written


class Recorder:
    """py-spy ``record`` processes attached to running services, stopped with SIGINT so they write their files."""

    def __init__(self, py_spy: str, out_dir: Path, rate: int = 100, native: bool = False):
        self.py_spy = py_spy
        self.out_dir = out_dir
        self.rate = rate
        self.native = native
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.started: dict[str, float] = {}
        self.elapsed: dict[str, float] = {}

    def start(self, name: str, pid: int) -> None:
        """Start sampling ``pid`` (every thread, CPU time only) into ``<out_dir>/<name>.txt``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{name}.txt"
        cmd = [self.py_spy, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw"]
        cmd += ["--output", str(out), "--threads"]
        # Native stacks need the process paused while it is read; Python-only sampling does not.
        cmd.append("--native" if self.native else "--nonblocking")
        log = (self.out_dir / f"{name}.py-spy.log").open("wb")
        self.started[name] = time.monotonic()
        self.running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), out)

    def stop(self) -> dict[str, Path]:
        """Stop every recorder; return the files written."""
        return _stop_recorders(self.running, self._note_elapsed)

    def _note_elapsed(self, name: str) -> None:
        self.elapsed[name] = time.monotonic() - self.started[name]


class PerfRecorder:
    """``perf record`` of running services: where their CPU goes by library (interpreter, gRPC core, kernel...)."""

    def __init__(self, perf: str, out_dir: Path, frequency: int = 199):
        self.perf = perf
        self.out_dir = out_dir
        self.frequency = frequency
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, pid: int) -> None:
        """Start sampling ``pid`` into ``<out_dir>/<name>.perf.data``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{name}.perf.data"
        cmd = [self.perf, "record", "-F", str(self.frequency), "-p", str(pid), "-o", str(out)]
        log = (self.out_dir / f"{name}.perf.log").open("wb")
        self.running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), out)

    def stop(self) -> dict[str, Path]:
        """Stop every recorder; return the files written."""
        return _stop_recorders(self.running)


def perf_by_library(perf: str, data: Path, top: int = 12) -> list[dict[str, Any]]:
    """CPU samples by shared object (``perf report --sort dso``), as % of all samples."""
    done = subprocess.run(
        [perf, "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows = []
    for line in done.stdout.splitlines():
        match = re.match(r"^\s+([\d.]+)%\s+(\S.*?)\s*$", line)
        if match:
            rows.append({"library": match.group(2), "pct": float(match.group(1))})
    return rows[:top]


def parse(path: Path) -> list[tuple[list[str], int]]:
    """Read py-spy's raw (collapsed) output: ``frame;frame;... count`` per line, root first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def _is_python(frame: str) -> bool:
    match = FRAME.match(frame)
    if match is None:
        return False
    file = match.group("file")
    return file.endswith(".py") or file.startswith("<")


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    func, file = match.group("func"), match.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    if func.startswith("0x"):
        func = "?"
    return f"{func} ({file})"


def _file_of(frame: str) -> str:
    short = _short(frame)
    return short[short.find("(") + 1 : -1] if "(" in short else short


def _thread_of(frame: str) -> str:
    """``thread (123): ThreadPoolExecutor-0_3`` -> ``ThreadPoolExecutor-0``."""
    name = frame.split(": ", 1)[1] if ": " in frame else frame
    return re.sub(r"_\d+$", "", name)


def summarize(path: Path, top: int = 25, seconds: float | None = None, rate: int = 100) -> dict[str, Any]:
    """Where the samples went, as % of all samples: by thread, leaf frame, deepest Python frame, file.

    py-spy counts a thread only while it is not idle (running, or blocked in I/O such as fsync), so
    with the recording's length each thread's samples also give its busy share of the wall time:
    a thread near 100% is a serial bottleneck even when the process's CPU share is low.
    """
    stacks = parse(path)
    total = sum(count for _, count in stacks) or 1
    threads: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    python_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    file_counts: Counter[str] = Counter()
    for stack, count in stacks:
        frames = stack
        if frames and frames[0].startswith("thread ("):
            threads[_thread_of(frames[0])] += count
            frames = frames[1:]
        if not frames:
            continue
        self_counts[_short(frames[-1])] += count
        file_counts[_file_of(frames[-1])] += count
        deepest = next((f for f in reversed(frames) if _is_python(f)), frames[-1])
        python_counts[_short(deepest)] += count
        for name in {_short(f) for f in frames}:
            incl_counts[name] += count

    def pct(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": k, "samples": v, "pct": round(100 * v / total, 1)} for k, v in counter.most_common(top)]

    busy = []
    if seconds:
        busy = [
            {"frame": k, "samples": v, "pct": round(100 * v / (seconds * rate), 1)} for k, v in threads.most_common(top)
        ]
    return {
        "samples": total,
        "seconds": round(seconds, 1) if seconds else None,
        "thread_busy_pct_of_wall": busy,
        "threads": pct(threads),
        "self": pct(self_counts),
        "python_self": pct(python_counts),
        "inclusive": pct(incl_counts),
        "files": pct(file_counts),
    }


def render(name: str, summary: dict[str, Any], top: int = 15) -> str:
    """A readable block for one service."""
    lines = [f"== {name}: {summary['samples']} CPU samples"]
    sections = (
        ("busy share of the wall time, per thread", "thread_busy_pct_of_wall"),
        ("by thread", "threads"),
        ("self (leaf frame)", "self"),
        ("self, attributed to the deepest Python frame", "python_self"),
        ("inclusive", "inclusive"),
        ("self by file or library", "files"),
    )
    for title, key in sections:
        if not summary.get(key):
            continue
        if key == "python_self" and summary[key] == summary.get("self"):
            continue  # no native frames: the same list as the leaf frames
        lines.append(f"  -- {title}")
        for row in summary[key][:top]:
            lines.append(f"  {row['pct']:5.1f}%  {row['frame']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one or more py-spy raw files."""
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--seconds", type=float, help="how long the recording ran (gives each thread's busy share)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy's sampling rate of the recording")
    args = parser.parse_args(argv)
    for path in args.files:
        print(render(path.stem, summarize(path, args.top, args.seconds, args.rate), args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
