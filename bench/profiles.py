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
from collections import Counter
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


class Recorder:
    """py-spy ``record`` processes attached to running services, stopped with SIGINT so they write their files."""

    def __init__(self, py_spy: str, out_dir: Path, rate: int = 100, idle: bool = False):
        self.py_spy = py_spy
        self.out_dir = out_dir
        self.rate = rate
        self.idle = idle
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, pid: int) -> None:
        """Start sampling ``pid`` into ``<out_dir>/<name>.txt``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{name}.txt"
        cmd = [self.py_spy, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw"]
        cmd += ["--output", str(out), "--nonblocking"]
        if self.idle:
            cmd.append("--idle")
        log = (self.out_dir / f"{name}.py-spy.log").open("wb")
        self.running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), out)

    def stop(self) -> dict[str, Path]:
        """Stop every recorder; return the files written."""
        written = {}
        for name, (process, out) in self.running.items():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if out.exists():
                written[name] = out
        self.running.clear()
        return written


def parse(path: Path) -> list[tuple[list[str], int]]:
    """Read py-spy's raw (collapsed) output: ``frame;frame;... count`` per line, root first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match.group('func')} ({file})"


def _file_of(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    return _short(f"x ({match.group('file')})")[3:-1]


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Top functions by self and inclusive samples, top files by self samples, as % of all samples."""
    stacks = parse(path)
    total = sum(count for _, count in stacks) or 1
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    file_counts: Counter[str] = Counter()
    for frames, count in stacks:
        leaf = _short(frames[-1]) if frames else "?"
        self_counts[leaf] += count
        file_counts[_file_of(frames[-1]) if frames else "?"] += count
        for name in {_short(f) for f in frames}:
            incl_counts[name] += count

    def pct(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": k, "samples": v, "pct": round(100 * v / total, 1)} for k, v in counter.most_common(top)]

    return {"samples": total, "self": pct(self_counts), "inclusive": pct(incl_counts), "files": pct(file_counts)}


def render(name: str, summary: dict[str, Any], top: int = 15) -> str:
    """A readable block for one service."""
    lines = [f"== {name}: {summary['samples']} samples"]
    for title, key in (("self (leaf) time", "self"), ("inclusive time", "inclusive"), ("self time by file", "files")):
        lines.append(f"  -- {title}")
        for row in summary[key][:top]:
            lines.append(f"  {row['pct']:5.1f}%  {row['frame']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one or more py-spy raw files."""
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    for path in args.files:
        print(render(path.stem, summarize(path, args.top), args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
