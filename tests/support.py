"""Small helpers for tests that start real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port (SO_REUSEADDR, as servers do: TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class OutputCollector:
    """Reads a process's stream on a thread so its pipe never fills; keeps every line."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._new:
                self.lines.append(raw.decode(errors="replace"))
                self._new.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        """Block until a line containing ``text`` was read, or the timeout passes."""
        with self._new:
            return self._new.wait_for(lambda: any(text in line for line in self.lines), timeout=timeout)

    @property
    def text(self) -> str:
        with self._new:
            return "".join(self.lines)


def grpcurl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary."""
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout)
