"""Small helpers for tests that start real processes.

No test picks a free port for a process to bind later (something else may take it in between): every
server binds port 0, in-process ones report the port from the server object, and a process started
here writes a ready file (``shared.ready``) that ``await_ready`` reads and passes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.stack import Child, child_env, passed_on, plan
from shared.ready import NotReady, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GRPCURL = str(Path(sys.executable).parent / "grpcurl")

ANY_PORT = {
    "ORDER_SERVICE_ADDR": "127.0.0.1:0",
    "USER_SERVICE_ADDR": "127.0.0.1:0",
    "EXCHANGE_GATEWAY_ADDR": "127.0.0.1:0",
    "SIM_PORT": "0",
}
"""Where each process of a stack listens: port 0, the port it binds is in its ready file."""

STACK_ORDER = ("exchange_simulator", "exchange_gateway", "user_service", "order_service")
"""The launcher's start order: each process after the ones whose address it needs."""

SERVICES = {
    "user_service": ("USER_SERVICE_ADDR", "trading.user.v1.UserService"),
    "exchange_gateway": ("EXCHANGE_GATEWAY_ADDR", "trading.gateway.v1.ExchangeGateway"),
    "order_service": ("ORDER_SERVICE_ADDR", "trading.order.v1.OrderService"),
}
"""Each gRPC service of a stack: the variable that holds its users' address, and its name in gRPC health."""

_CHILDREN = {child.name: child for child in plan({"BINANCE_ENV": "sim"})}


def spawn(name: str, env: dict[str, str], ready_file: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``python -m services.<name>`` with the stack's ``env`` and ``ready_file`` (as the launcher does)."""
    ready_file.unlink(missing_ok=True)
    child = _CHILDREN[name]
    return subprocess.Popen([PYTHON, "-m", child.module], cwd=ROOT, env=child_env(env, child, ready_file), **popen)


def await_ready(
    name: str, process: subprocess.Popen[bytes], ready_file: Path, env: dict[str, str], logs: Callable[[], str]
) -> dict[str, Any]:
    """Wait for ``name``'s ready file and put the addresses it reports into ``env`` for the processes after it."""
    try:
        record = wait_ready(ready_file, process.poll, timeout=60)
    except NotReady as exc:
        raise AssertionError(f"{name} {exc}\n{logs()}") from None
    child: Child = _CHILDREN[name]
    env.update(passed_on(child, record, env))
    return record


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 held bound but not listening: a connection to it is refused, and no server can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


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


@dataclass
class Proc:
    """A process of a stack and what it wrote to stdout and stderr."""

    name: str
    process: subprocess.Popen[bytes]
    out: OutputCollector
    err: OutputCollector

    def logs(self, tail: int = 4000) -> str:
        return f"--- {self.name} stdout\n{self.out.text[-tail:]}\n--- {self.name} stderr\n{self.err.text[-tail:]}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` unless the process has ended, and wait for it to end (SIGKILL after 10 seconds)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def spawn_collected(name: str, env: dict[str, str], ready_file: Path) -> Proc:
    """``spawn`` with its output read on threads, kept for the failure messages."""
    process = spawn(name, env, ready_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Proc(name, process, OutputCollector(process.stdout), OutputCollector(process.stderr))


class ProcessGroup(Protocol):
    def start(self, name: str) -> Proc: ...

    def stop_all(self) -> None: ...


G = TypeVar("G", bound=ProcessGroup)


def running_in_order(stack: G) -> Iterator[G]:
    """Start every process of ``stack`` in the launcher's order and yield it; stop them all afterwards."""
    try:
        for name in STACK_ORDER:
            stack.start(name)
        yield stack
    finally:
        stack.stop_all()


def spawn_launcher(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], OutputCollector, OutputCollector]:
    """Start ``python -m launcher`` with ``env``; its stdout and stderr are read on threads."""
    process = subprocess.Popen(
        [PYTHON, "-m", "launcher"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return process, OutputCollector(process.stdout), OutputCollector(process.stderr)


def wait_answering(proc: Proc, env: dict[str, str], channel: Callable[[str], grpc.Channel]) -> None:
    """Wait until the ready process answers: the simulator its ping, a service gRPC health SERVING.

    ``channel`` opens a channel to an address as a user's client would (plain or TLS).
    """
    if proc.name == "exchange_simulator":
        wait_http(f"http://127.0.0.1:{env['SIM_PORT']}/api/v3/ping", proc)
    else:
        variable, service = SERVICES[proc.name]
        wait_serving(env[variable], service, proc, channel)


def wait_serving(
    addr: str, service: str, proc: Proc, channel: Callable[[str], grpc.Channel], timeout: float = 60.0
) -> None:
    """Ask gRPC health at ``addr`` until ``service`` is SERVING; fail with the logs if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.process.returncode}\n{proc.logs()}")
        # A fresh channel each time: a channel that failed to connect waits out its back-off.
        with channel(addr) as opened:
            try:
                answer = health_pb2_grpc.HealthStub(opened).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not become SERVING at {addr}\n{proc.logs()}")


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """GET ``url`` until it answers 200; fail with the logs if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.process.returncode}\n{proc.logs()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not answer at {url}\n{proc.logs()}")


def assert_no_secret(secrets: Iterable[str], events: Iterable[object], records: list[logging.LogRecord]) -> None:
    """No secret stands in the audit ``events`` nor in the log ``records``, which include the security log."""
    recorded = "\n".join(str(e) for e in events)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in records)
    assert any(r.name == "security" for r in records)
    for secret in secrets:
        assert secret not in recorded
        assert secret not in logged


async def next_ticker(call: Any, until: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """The next ticker on the WatchTickers stream ``call`` for which ``until`` holds (earlier ones are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await call.read()
            assert message is not grpc.aio.EOF
            if until(message.ticker):
                return message.ticker


def grpcurl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary."""
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout)
