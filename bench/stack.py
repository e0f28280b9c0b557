"""Start the whole stack as ``make run`` does, on ports of its own, a temporary directory and quiet logs.

The process list and environment come from ``launcher.stack`` (the same modules, the same
variables, the same ready files); the differences are the bench's: every address on port 0 (each
process binds a free port and reports it) and throw-away SQLite files so a bench never
collides with a running ``make run``, LOG_LEVEL=WARNING so access logs stay off the hot path, each
service's output in a log file, and the simulator's rate limits raised before the gateway starts
(the gateway reads them from exchangeInfo), so that Binance's per-account order limits are not what
gets measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from launcher.stack import Child, LaunchError, build_environment, child_env, plan, ready_target
from shared.config import REPO_ROOT
from shared.healthcheck import probe

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_LEVEL = "WARNING"

# Raised far above anything the benchmark can reach (Binance's own: 50 orders/10 s, 160,000/day).
BENCH_LIMITS = {
    "orders_per_10s": 10_000_000,
    "orders_per_day": 1_000_000_000,
    "weight_per_minute": 100_000_000,
    "raw_requests_per_5m": 1_000_000_000,
}
# Asked for as well; an older simulator that does not know the key is asked again without it.
BENCH_MAX_NUM_ORDERS = 1_000_000
# The simulated Binance account holds every user's funds: make it deep enough for any run.
BENCH_SIM_BALANCES = "USDT=100000000000,BTC=10000000,ETH=100000000,BNB=1000000000"

STRIPPED = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_BASE_URL", "BINANCE_WS_API_URL")


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``body`` as JSON) and decode the JSON answer; raise OSError on failure."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback URL built here
        text = response.read().decode()
    return json.loads(text) if text else None


class BenchStack:
    """The four processes of the trading core, started for one benchmark run."""

    def __init__(self, workdir: Path, say: Callable[[str], None] = print, extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        self.say = say
        base = {k: v for k, v in os.environ.items() if k not in STRIPPED}
        base.update(
            {
                "ORDER_SERVICE_ADDR": "127.0.0.1:0",
                "USER_SERVICE_ADDR": "127.0.0.1:0",
                "EXCHANGE_GATEWAY_ADDR": "127.0.0.1:0",
                "SIM_PORT": "0",
                # Metrics served as in production (scraped by nobody here), on free ports.
                "ORDER_METRICS_ADDR": "127.0.0.1:0",
                "USER_METRICS_ADDR": "127.0.0.1:0",
                "GATEWAY_METRICS_ADDR": "127.0.0.1:0",
                "ORDER_DB_URL": f"sqlite:///{workdir}/order.db",
                "USER_DB_URL": f"sqlite:///{workdir}/user.db",
                "GATEWAY_DB_URL": f"sqlite:///{workdir}/gateway.db",
                "BINANCE_ENV": "sim",
                "SIM_RANDOM_WALK": "true",
                "SIM_BALANCES": BENCH_SIM_BALANCES,
                "LOG_LEVEL": LOG_LEVEL,
                "TRADING_ADMIN_TOKEN": "",
                "TRADING_SERVICE_TOKEN": "",
                # The benchmark measures the stack's throughput, not each user's fair share of it.
                "ORDER_USER_ORDERS_PER_SECOND": "100000",
                "ORDER_USER_MAX_OPEN_ORDERS": "1000000",
            }
        )
        base.update(extra_env or {})
        self.env, _notes = build_environment(base)
        self.children: list[Child] = plan(self.env)
        self.logs: dict[str, Path] = {}
        self._files: list[IO[bytes]] = []
        self.limits_response: Any = None

    @property
    def sim_url(self) -> str:
        """The simulator's base URL."""
        return f"http://127.0.0.1:{self.env['SIM_PORT']}"

    @property
    def admin_token(self) -> str:
        """The admin token of this run."""
        return self.env["TRADING_ADMIN_TOKEN"]

    def pids(self) -> dict[str, int]:
        """Process id of every running child, by service name."""
        return {c.name: c.process.pid for c in self.children if c.process is not None and c.process.poll() is None}

    def start(self) -> None:
        """Start each child in order and wait until it is healthy; raise LaunchError with its log tail if not.

        Each child's ready file gives the ports it bound, which go into ``env`` for the children after it.
        """
        for child in self.children:
            log_path = self.workdir / f"{child.name}.log"
            self.logs[child.name] = log_path
            log = log_path.open("wb")
            self._files.append(log)
            ready_file = self.workdir / f"{child.name}.ready"
            child.process = subprocess.Popen(
                [sys.executable, "-m", child.module],
                cwd=REPO_ROOT,
                env=child_env(self.env, child, ready_file),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the bench, which then stops everything in order
            )
            deadline = time.monotonic() + START_TIMEOUT
            target = ""
            while not (target and probe(target, timeout=1.0)):
                if child.process.poll() is not None:
                    code = child.process.returncode
                    raise LaunchError(f"{child.name} exited with code {code} while starting:\n{self.tail(child.name)}")
                if time.monotonic() > deadline:
                    limit = f"{START_TIMEOUT:.0f} s"
                    raise LaunchError(f"{child.name} not healthy within {limit}:\n{self.tail(child.name)}")
                if not target:
                    target = ready_target(child, ready_file, self.env)
                    if target:
                        continue
                time.sleep(0.1)
            self.say(f"  {child.name:<18} healthy (pid {child.process.pid}, log {log_path})")
            if child.name == "exchange_simulator":
                self.raise_limits()

    def raise_limits(self) -> None:
        """POST /sim/v1/limits so that the exchange's per-account limits stay out of the measurement."""
        url = f"{self.sim_url}/sim/v1/limits"
        try:
            try:
                self.limits_response = http_json(url, {**BENCH_LIMITS, "max_num_orders": BENCH_MAX_NUM_ORDERS})
            except urllib.error.HTTPError:
                self.limits_response = http_json(url, BENCH_LIMITS)
        except OSError as exc:
            raise LaunchError(f"could not raise the simulator's limits at {url}: {exc}") from exc

    def sim(self, path: str, body: Any = None) -> Any:
        """Call one of the simulator's endpoints (``/sim/v1/...`` or Binance's public ones)."""
        return http_json(f"{self.sim_url}{path}", body)

    def tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a child's log."""
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def first_exited(self) -> Child | None:
        """A child that exited on its own, if any."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    def stop(self) -> None:
        """SIGTERM every child in reverse order, wait, then SIGKILL what is left; close the logs."""
        for child in reversed(self.children):
            process = child.process
            if process is None or process.poll() is not None:
                continue
            try:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=STOP_TIMEOUT)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                self.say(f"  {child.name} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        for log in self._files:
            log.close()
        self._files.clear()
