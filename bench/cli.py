"""The orchestrator: ``python -m bench`` (full run), ``--soak`` (10 minutes at 100/s), ``--quick`` (smoke run).

It measures the echo ceiling, starts the stack, creates the users, runs the load process
(``bench.load``) as a separate child while sampling every process with psutil, checks the
ledgers, then prints the table and the verdicts and writes ``bench/results/<name>.json`` and
``.png``. Everything it started is stopped on the way out, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import profiles, report
from bench.accounts import BenchUser, check_ledgers, create_users
from bench.metrics import Sampler
from bench.postgres import TemporaryPostgres
from bench.postgres import installed as postgres_installed
from bench.stack import LOG_LEVEL, BenchStack
from bench.workload import FALLBACK_SYMBOLS, symbols_from_exchange_info
from launcher.stack import LaunchError
from shared.config import REPO_ROOT

DB_VARIABLES = {"order": "ORDER_DB_URL", "user": "USER_DB_URL", "gateway": "GATEWAY_DB_URL"}
"""With ``--db postgres``: the database made for each service, and the variable that names it."""

RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_SATURATION_RATES = [150, 200, 300, 400, 600, 800, 1000, 1300, 1600, 2000, 2500, 3000]
FLOOR_SATURATION_RATES = [200, 300, 400, 500, 600, 700, 800, 1000, 1300]
# The design's floor (bench.floor), first with the hops alone, then with the durable commits too.
FLOOR_VARIANTS = ("transport", "durable")
# Started in this order, each on port 0; a stand-in is given the addresses of the ones it calls.
FLOOR_ROLES = ("exchange", "user", "gateway", "order")
FLOOR_CALLS = {"gateway": (("--exchange", "exchange"),), "order": (("--user", "user"), ("--gateway", "gateway"))}
# How long a helper process (echo server, floor stand-in) may take to print "ready PORT".
READY_TIMEOUT_S = 30.0


@dataclass
class Settings:
    """Everything one run does, after the command line is read."""

    mode: str  # "bench" | "quick" | "soak"
    users: int
    warmup_rate: float
    warmup_s: float
    rate: float
    duration_s: float
    saturation_rates: list[int]
    step_s: float
    echo_runs: int
    echo_s: float
    echo_concurrency: int
    echo_channels: int
    floor_variants: list[str]
    floor_warmup_s: float
    floor_duration_s: float
    floor_rates: list[int]
    floor_step_s: float
    channels: int
    max_in_flight: int
    deadline_s: float
    fill_wait_s: float
    serial_count: int
    ledger_check: bool
    results_dir: Path
    name: str
    profile_dir: Path | None = None
    py_spy: str | None = None
    profile_services: list[str] = field(default_factory=list)
    profile_phase: str = "sat-"
    profile_native: bool = False
    perf: bool = False
    keep: bool = False
    strict: bool = False
    seed: int = 1
    walk_interval_ms: int = 100
    walk_step_bps: int = 10
    log_level: str = LOG_LEVEL
    db: str = "sqlite"  # the services' databases: "sqlite" files or a temporary "postgres" server


def parse_args(argv: list[str] | None) -> Settings:
    """Read the command line into Settings."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run: a few seconds at a low rate (make test)")
    mode.add_argument("--soak", action="store_true", help="the soak: --duration (default 600 s) at --rate (100/s)")
    parser.add_argument("--rate", type=float, help="orders/s of the fixed-rate phase (default 100; quick: 20)")
    parser.add_argument("--duration", type=float, help="seconds of the fixed-rate phase (60; quick 3; soak 600)")
    parser.add_argument("--users", type=int, help="bench users, each with balances and an API key (16; quick 4)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up, not reported (5 at half the rate; soak: 30 at the rate)"
    )
    parser.add_argument(
        "--saturation-rates",
        type=lambda text: [int(x) for x in text.split(",") if x],
        help=f"offered rates of the saturation steps (default {','.join(map(str, DEFAULT_SATURATION_RATES))})",
    )
    parser.add_argument("--step", type=float, help="seconds per saturation step (default 8)")
    parser.add_argument("--no-saturation", action="store_true", help="skip the saturation steps")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo ceiling")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the design's floor (bench.floor: the placement path's hops, with and without durable commits, "
        "and nothing done in them)",
    )
    parser.add_argument(
        "--serial",
        type=int,
        help="placements (each then cancelled) sent one at a time before the load: the unloaded latency floor "
        "(default 200; quick 10; soak 0)",
    )
    parser.add_argument("--no-ledger-check", action="store_true", help="skip the ledger check at the end")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (connections) of the load process")
    parser.add_argument("--max-in-flight", type=int, default=4000, help="cap on requests in flight (open loop)")
    parser.add_argument("--deadline", type=float, default=10.0, help="per-RPC deadline in seconds")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go")
    parser.add_argument("--profile-dir", type=Path, help="record the services with py-spy during saturation")
    parser.add_argument("--py-spy", help="path of the py-spy executable (default: on PATH or /tmp/pyspy/bin)")
    parser.add_argument(
        "--profile-services",
        default=",".join(report.SERVICES),
        help="comma-separated services to profile (default: all four)",
    )
    parser.add_argument(
        "--profile-phase",
        default="sat-",
        help="start recording at the first phase whose name starts with this (default sat-: the saturation steps)",
    )
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy --native: C frames too (pauses the process per sample)"
    )
    parser.add_argument(
        "--perf", action="store_true", help="also record the services with perf: CPU by library (needs --profile-dir)"
    )
    parser.add_argument(
        "--log-level", default=LOG_LEVEL, help=f"LOG_LEVEL of the services (default {LOG_LEVEL}: access logs off)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (databases, logs)")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is not met")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the services' databases: SQLite files (default) or a temporary PostgreSQL 15 server, one database each",
    )
    parser.add_argument(
        "--walk-interval-ms", type=int, default=100, help="simulator random walk: one step every N ms (default 100)"
    )
    parser.add_argument(
        "--walk-step-bps", type=int, default=10, help="simulator random walk: steps of up to N basis points (10)"
    )
    args = parser.parse_args(argv)
    name = "quick" if args.quick else "soak" if args.soak else "latest"
    if args.db == "postgres":
        name += "-postgres"
    if args.quick:
        defaults: dict[str, Any] = dict(users=4, rate=20.0, duration=3.0, warmup=1.0, rates=[40, 60], step=1.5)
        echo = (1, 1.5)
        floor: dict[str, Any] = dict(warmup=0.5, duration=1.5, rates=[40], step=1.0)
    elif args.soak:
        defaults = dict(users=16, rate=100.0, duration=600.0, warmup=30.0, rates=[], step=8.0)
        echo = (0, 0.0)
        floor = dict(warmup=0.0, duration=0.0, rates=[], step=0.0)
    else:
        defaults = dict(users=16, rate=100.0, duration=60.0, warmup=5.0, rates=DEFAULT_SATURATION_RATES, step=8.0)
        echo = (3, 3.0)
        floor = dict(warmup=2.0, duration=20.0, rates=FLOOR_SATURATION_RATES, step=5.0)
    rate = args.rate or defaults["rate"]
    return Settings(
        mode="quick" if args.quick else "soak" if args.soak else "bench",
        users=args.users or defaults["users"],
        warmup_rate=rate if args.soak else max(rate / 2, 1.0),
        warmup_s=defaults["warmup"] if args.warmup is None else args.warmup,
        rate=rate,
        duration_s=args.duration or defaults["duration"],
        saturation_rates=[] if args.no_saturation else (args.saturation_rates or defaults["rates"]),
        step_s=args.step or defaults["step"],
        echo_runs=0 if args.no_echo else echo[0],
        echo_s=echo[1],
        echo_concurrency=64,
        echo_channels=4,
        floor_variants=[] if (args.no_floor or args.soak) else list(FLOOR_VARIANTS),
        floor_warmup_s=floor["warmup"],
        floor_duration_s=floor["duration"],
        floor_rates=[] if args.no_saturation else floor["rates"],
        floor_step_s=floor["step"],
        channels=args.channels,
        max_in_flight=args.max_in_flight,
        deadline_s=args.deadline,
        fill_wait_s=2.0 if args.quick else 3.0,
        serial_count=(10 if args.quick else 0 if args.soak else 200) if args.serial is None else args.serial,
        ledger_check=not args.no_ledger_check,
        results_dir=args.results_dir,
        name=name,
        db=args.db,
        profile_dir=args.profile_dir,
        py_spy=args.py_spy,
        profile_services=[s for s in args.profile_services.split(",") if s],
        profile_phase=args.profile_phase,
        profile_native=args.profile_native,
        perf=args.perf,
        log_level=args.log_level,
        keep=args.keep,
        strict=args.strict,
        seed=args.seed,
        walk_interval_ms=args.walk_interval_ms,
        walk_step_bps=args.walk_step_bps,
    )


def say(text: str) -> None:
    """Print a progress line now."""
    print(text, flush=True)


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import grpc
    import psutil

    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class _Interrupted(Exception):
    """SIGTERM: stop like on Ctrl-C."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Interrupted


def _await_ready(process: subprocess.Popen[bytes], what: str, timeout: float = READY_TIMEOUT_S) -> int:
    """Wait for ``process`` to print "ready PORT" on its first line and return the port it bound.

    A RuntimeError naming ``what`` if it does not.
    """
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    if not readable:
        raise RuntimeError(f"{what} did not start within {timeout:.0f} s")
    word, _, port = process.stdout.readline().decode(errors="replace").strip().partition(" ")
    if word != "ready" or not port.isdigit():
        raise RuntimeError(f"{what} did not start (exit code {process.poll()})")
    return int(port)


@contextlib.contextmanager
def _child(cmd: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """A child process that is always terminated (then killed) on the way out."""
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, start_new_session=True, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Run:
    """One benchmark run."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.sampler = Sampler()
        self.result: dict[str, Any] = {
            "schema": 1,
            "mode": settings.mode,
            "quick": settings.mode == "quick",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "machine": machine_info(),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
            "notes": [],
        }
        self.run_id = secrets.token_hex(3)
        self.profile_files: dict[str, Path] = {}
        self.profile_seconds: dict[str, float] = {}
        self.perf_files: dict[str, Path] = {}
        self.perf_recorder: profiles.PerfRecorder | None = None
        self._profiling = False
        self.max_num_orders: int | None = None

    # ------------------------------------------------------------------ phases of the run

    def echo(self) -> None:
        """Measure the bare grpc.aio echo: the ceiling of one hop on this machine."""
        if not self.s.echo_runs:
            return
        server_cmd = [sys.executable, "-m", "bench.echo", "serve", "--port", "0"]
        with _child(server_cmd, stdout=subprocess.PIPE) as server:
            port = _await_ready(server, "the echo server")
            runs_s = f"{self.s.echo_runs} x {self.s.echo_s:.1f} s"
            say(f"Echo ceiling: bare grpc.aio unary echo on 127.0.0.1:{port}, {runs_s}")
            self.sampler.watch("echo_server", server.pid)
            runs = []
            for index in range(self.s.echo_runs):
                drive = [
                    sys.executable,
                    *("-m", "bench.echo", "drive", "--target", f"127.0.0.1:{port}"),
                    *("--duration", str(self.s.echo_s), "--concurrency", str(self.s.echo_concurrency)),
                    *("--channels", str(self.s.echo_channels), "--warmup", "0.5"),
                ]
                with _child(drive, stdout=subprocess.PIPE) as client:
                    self.sampler.watch("echo_client", client.pid)
                    self.sampler.mark(f"echo-{index + 1}")  # after watch: the client's CPU is in the phase
                    out, _ = client.communicate(timeout=self.s.echo_s + 60)
                self.sampler.mark("")
                runs.append(json.loads(out.decode().strip().splitlines()[-1]))
                say(f"  run {index + 1}: {runs[-1]['rps']:.0f} calls/s, p95 {runs[-1]['latency']['p95_ms']:.2f} ms")
            self.sampler.unwatch("echo_server")
            self.sampler.unwatch("echo_client")
        best = max(runs, key=lambda r: r["rps"])
        self.result["echo"] = {**best, "runs_rps": [r["rps"] for r in runs]}
        self.result["echo_rps"] = best["rps"]

    def floor(self, workdir: Path) -> None:
        """Measure the design's floor (bench.floor): the placement path's hops with nothing done in them."""
        if not self.s.floor_variants:
            return
        self.result["floor"] = {}
        for variant in self.s.floor_variants:
            say(f"Design floor ({variant}): the placement path's hops with nothing done in them")
            self.result["floor"][variant] = self._floor_variant(variant, workdir / f"floor-{variant}")

    def _floor_variant(self, variant: str, directory: Path) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        address: dict[str, str] = {}  # filled in as each stand-in reports the port it bound
        names = {role: f"floor_{role}" for role in FLOOR_ROLES}
        pids: dict[str, int] = {}
        with contextlib.ExitStack() as children:
            for role in FLOOR_ROLES:
                cmd = [sys.executable, "-m", "bench.floor", "serve", role, "--port", "0"]
                cmd += [arg for flag, callee in FLOOR_CALLS.get(role, ()) for arg in (flag, address[callee])]
                if variant == "durable" and role != "exchange":
                    cmd += ["--db", str(directory / f"{role}.db")]
                server = children.enter_context(_child(cmd, stdout=subprocess.PIPE))
                port = _await_ready(server, f"the floor's {role} stand-in")
                address[role] = f"127.0.0.1:{port}"
                self.sampler.watch(names[role], server.pid)
                pids[names[role]] = server.pid
            drive = [
                *(sys.executable, "-m", "bench.floor", "drive", "--target", address["order"]),
                *("--rate", str(self.s.rate), "--duration", str(self.s.floor_duration_s)),
                *("--warmup", str(self.s.floor_warmup_s), "--step-s", str(self.s.floor_step_s)),
                *("--steps", ",".join(map(str, self.s.floor_rates)), "--channels", str(self.s.channels)),
                *("--max-in-flight", str(self.s.max_in_flight)),
            ]
            result: dict[str, Any] = {}
            with _child(drive, stdout=subprocess.PIPE, text=True) as driver:
                assert driver.stdout is not None
                self.sampler.watch("floor_client", driver.pid)
                pids["floor_client"] = driver.pid
                for line in driver.stdout:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise RuntimeError(f"the floor's driver printed {line.strip()[:200]!r}") from None
                    if event["event"] == "start":
                        self.sampler.mark(f"floor-{variant}-{event['phase']}")
                    elif event["event"] == "end":
                        self.sampler.mark("")
                        say(
                            f"  {event['name']:<16} offered {event['target_rps']:>5.0f}/s "
                            f"achieved {event['achieved_rps']:>7.1f}/s p50 {_ms(event['p50_ms'])} "
                            f"p95 {_ms(event['p95_ms'])} p99 {_ms(event['p99_ms'])} ms errors {event['errors']}"
                        )
                    elif event["event"] == "result":
                        result = {k: v for k, v in event.items() if k != "event"}
                if driver.wait() != 0 or not result:
                    raise RuntimeError("the floor's driver failed")
            for name in [*names.values(), "floor_client"]:
                self.sampler.unwatch(name)
        result["pids"] = pids
        return self._floor_cpu(variant, result, list(names.values()))

    def _floor_cpu(self, variant: str, result: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """CPU milliseconds per answered placement of the stand-ins (and the client) in each phase.

        The CPU is what each process used between the phase's start and end marks, divided by the
        placements answered in the phase (not by the achieved rate, whose span is a little shorter).
        """
        cpu = self.sampler.phase_cpu()
        phases = [result["fixed"], *result["saturation"]["curve"]]
        for phase in phases:
            marked = cpu.get(f"floor-{variant}-{phase['name']}") or {}
            shares = marked.get("cpu_pct") or {}
            if phase["ok"] and shares:
                wall_s = marked["wall_s"]
                per = {n: round(10 * shares.get(n, 0.0) * wall_s / phase["ok"], 3) for n in [*names, "floor_client"]}
                phase["cpu_ms_per_placement"] = per
                phase["cpu_ms_per_placement_stand_ins"] = round(sum(per[n] for n in names), 3)
        return result

    def idle(self) -> None:
        """Measure each service's CPU with no load (random walk on): the part of the cost that is not per order."""
        seconds = 1.0 if self.s.mode == "quick" else 5.0
        say(f"Idle for {seconds:.0f} s (CPU with no load)...")
        self.sampler.mark("idle")
        time.sleep(seconds)
        self.sampler.mark("")

    def symbols(self, stack: BenchStack) -> dict[str, dict[str, str]]:
        """The symbols' filters and prices from the simulator (Binance's exchangeInfo and ticker)."""
        try:
            info = stack.sim("/api/v3/exchangeInfo")
            prices = {row["symbol"]: row["price"] for row in stack.sim("/api/v3/ticker/price")}
            symbols = symbols_from_exchange_info(info, prices)
            max_orders = {
                e["symbol"]: f.get("maxNumOrders")
                for e in info.get("symbols", [])
                for f in e.get("filters", [])
                if f.get("filterType") == "MAX_NUM_ORDERS"
            }
            self.result["simulator_max_num_orders"] = max_orders
            known = [v for v in max_orders.values() if isinstance(v, int)]
            self.max_num_orders = min(known) if known else None
            if any((v or 0) < 10_000 for v in max_orders.values()):
                self.result["notes"].append(
                    f"the simulator's MAX_NUM_ORDERS stays at {sorted(set(max_orders.values()))} per symbol "
                    "(/sim/v1/limits did not raise it): the load keeps at most 85% of it open per symbol and "
                    "turns a resting order into a cancel when every symbol is full (capped_rests per phase)"
                )
            if symbols and all(d.get("price") for d in symbols.values()):
                return symbols
        except (OSError, KeyError, ValueError) as exc:
            self.result["notes"].append(
                f"could not read exchangeInfo/ticker from the simulator ({exc}); using defaults"
            )
        return FALLBACK_SYMBOLS

    def load(self, stack: BenchStack, users: list[BenchUser], symbols: dict[str, dict[str, str]], workdir: Path) -> Any:
        """Run the load process through every phase; print its progress; return its result."""
        phases = []
        if self.s.warmup_s > 0:
            phases.append({"name": "warmup", "rate": self.s.warmup_rate, "duration": self.s.warmup_s, "report": False})
        phases.append(
            {"name": "soak" if self.s.mode == "soak" else "fixed", "rate": self.s.rate, "duration": self.s.duration_s}
        )
        spec = {
            "target": stack.env["ORDER_SERVICE_ADDR"],
            "sim_url": stack.sim_url,
            "users": [{"user_id": u.user_id, "api_key": u.api_key} for u in users],
            "symbols": symbols,
            "serial": {"count": self.s.serial_count, "gap_s": 0.02} if self.s.serial_count > 0 else None,
            # The unloaded phase also times single hops to the gateway and the user service directly.
            "internal": {
                "gateway_target": stack.env["EXCHANGE_GATEWAY_ADDR"],
                "user_target": stack.env["USER_SERVICE_ADDR"],
                "service_token": stack.env["TRADING_SERVICE_TOKEN"],
            },
            "phases": phases,
            "saturation": {
                "rates": self.s.saturation_rates,
                "step_duration": self.s.step_s,
                "keep_up": 0.9,
                "max_error_rate": 0.01,
                "max_p95_ms": 1000.0,
                "pause_s": 0.5 if self.s.mode == "quick" else 1.0,
                "recover_s": 2.0 if self.s.mode == "quick" else 10.0,
            }
            if self.s.saturation_rates
            else None,
            "channels": self.s.channels,
            "max_in_flight": self.s.max_in_flight,
            "deadline_s": self.s.deadline_s,
            "fill_wait_s": self.s.fill_wait_s,
            "seed": self.s.seed,
            "run_id": self.run_id,
            # Stay below the exchange's open-order cap per symbol (shared by every user of the one account).
            "open_orders_cap_per_symbol": int(self.max_num_orders * 0.85) if self.max_num_orders else 0,
            "price_interval_s": 0.2,
        }
        spec_path, out_path = workdir / "load-spec.json", workdir / "load-result.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "bench.load", "--spec", str(spec_path), "--out", str(out_path)]
        recorder = None
        if self.s.profile_dir is not None:
            py_spy = profiles.find_py_spy(self.s.py_spy)
            if py_spy is None:
                self.result["notes"].append("py-spy not found: no profile recorded")
            else:
                recorder = profiles.Recorder(py_spy, self.s.profile_dir, native=self.s.profile_native)
            perf = shutil.which("perf") if self.s.perf else None
            if self.s.perf and perf is None:
                self.result["notes"].append("perf not found: no CPU split by library")
            elif perf is not None:
                self.perf_recorder = profiles.PerfRecorder(perf, self.s.profile_dir)
        with _child(cmd, stdout=subprocess.PIPE, text=True, bufsize=1) as gen:
            self.sampler.watch("load_generator", gen.pid)
            self.result.setdefault("pids", {})["load_generator"] = gen.pid
            say(f"Load process started (pid {gen.pid}): {len(users)} users, {self.s.channels} channels, open loop")
            assert gen.stdout is not None
            try:
                for line in gen.stdout:
                    self._on_event(line, stack, recorder)
            finally:
                if recorder is not None:
                    self.profile_files = recorder.stop()
                    self.profile_seconds = dict(recorder.elapsed)
                if self.perf_recorder is not None:
                    self.perf_files = self.perf_recorder.stop()
            code = gen.wait()
            self.sampler.mark("")
            self.sampler.unwatch("load_generator")
        if code != 0 or not out_path.exists():
            raise RuntimeError(f"the load process failed (exit {code})")
        return json.loads(out_path.read_text())

    def _on_event(self, line: str, stack: BenchStack, recorder: profiles.Recorder | None) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            say(f"  [load] {line.rstrip()}")
            return
        kind = event.get("event")
        if kind == "serial_start":
            say(f"Unloaded latency: {event['count']} placements, each then cancelled, one at a time")
        elif kind == "serial_end":
            p = event["summary"]
            rpcs = [k for k in ("PlaceOrder", "CancelOrder", "GetLastPrice", "ReserveFunds", "ReleaseFunds") if k in p]
            say(
                "  -> "
                + ", ".join(f"{k} p50 {p[k]['p50_ms']} p95 {p[k]['p95_ms']} ms" for k in rpcs)
                + (f", {p['errors']}" if p["errors"] else "")
            )
        elif kind == "phase_start":
            self.sampler.mark(event["phase"])
            self.result.setdefault("load_started_wall", event["wall"])
            say(f"Phase {event['phase']}: {event['rate']:.0f} orders/s offered for {event['duration']:.0f} s")
            if event["phase"].startswith(self.s.profile_phase) and not self._profiling:
                self._profiling = True
                pids = stack.pids()
                for name in self.s.profile_services:
                    for tool in (recorder, self.perf_recorder):
                        if name in pids and tool is not None:
                            tool.start(name, pids[name])
                tools = ["py-spy"] * (recorder is not None) + ["perf"] * (self.perf_recorder is not None)
                if tools:
                    services = ", ".join(self.s.profile_services)
                    say(f"  {' and '.join(tools)} recording {services} into {self.s.profile_dir}")
        elif kind == "phase_end":
            self.sampler.mark("")
            p = event["summary"]
            say(
                f"  -> {p['name']}: achieved {p['achieved_rps']:.1f}/s, p50 {p['p50_ms']} p95 {p['p95_ms']} "
                f"p99 {p['p99_ms']} ms, errors {p['errors']} {p['errors_by_code'] or ''}, "
                f"fill p95 {(p.get('fill_latency') or {}).get('p95_ms')} ms, "
                f"open resting {p.get('open_resting_orders')}"
            )
        elif kind == "tick":
            dead = stack.first_exited()
            if dead is not None:
                raise RuntimeError(f"{dead.name} exited during the run:\n{stack.tail(dead.name)}")
            say(
                f"  {event['phase']:<9} t={event['t']:6.1f}s offered {event['offered_rps']:>5.0f}/s "
                f"done {event['ok']:>5}/s p50 {_ms(event['p50_ms'])} p95 {_ms(event['p95_ms'])} "
                f"p99 {_ms(event['p99_ms'])} errors {event['errors']:>3} in-flight {event['in_flight']:>4} "
                f"open {event['open_resting']:>5} (phase p95 {_ms(event.get('phase_p95_ms'))})"
            )
            self.result.setdefault("timeline", []).append({k: v for k, v in event.items() if k != "event"})

    def ledgers(self, stack: BenchStack, users: list[BenchUser]) -> None:
        """Stop the price walk, let the last fills settle, and compare every ledger with its balances."""
        if not self.s.ledger_check:
            return
        with contextlib.suppress(OSError):
            stack.sim("/sim/v1/random-walk", {"enabled": False})
        time.sleep(2.0)
        say("Checking every bench user's ledger against their balances...")
        check = asyncio.run(check_ledgers(stack.env["USER_SERVICE_ADDR"], stack.admin_token, users))
        if not check["consistent"]:
            time.sleep(3.0)  # a fill may still have been on its way: look once more
            check = {
                **asyncio.run(check_ledgers(stack.env["USER_SERVICE_ADDR"], stack.admin_token, users)),
                "retried": True,
            }
        self.result["ledger"] = check
        say(f"  ledgers {'consistent' if check['consistent'] else 'NOT consistent'} ({check['entries']} entries)")

    # ------------------------------------------------------------------ the whole run

    def execute(self) -> int:
        """Run everything; return the exit code."""
        s = self.s
        machine = self.result["machine"]
        say(
            f"Trading core benchmark ({s.mode}) on {machine['cpu_model']}, {machine['cpu_count']} CPUs, "
            f"load average {machine['load_average_at_start']}"
        )
        say(f"Services run with LOG_LEVEL={s.log_level}: access logs are off the hot path.")
        self.sampler.start()
        workdir = Path(tempfile.mkdtemp(prefix="trading-bench-"))
        stack: BenchStack | None = None
        postgres: TemporaryPostgres | None = None
        try:
            self.echo()
            self.floor(workdir)
            databases: dict[str, str] = {}
            if s.db == "postgres":
                if not postgres_installed():
                    raise LaunchError("--db postgres needs PostgreSQL 15 (apt-get install postgresql-15)")
                postgres = TemporaryPostgres(durable=True).start()
                databases = {v: postgres.create_database(n) for n, v in DB_VARIABLES.items()}
                say("Starting the stack (simulator limits raised, a temporary PostgreSQL 15 server, durable)...")
            else:
                say("Starting the stack (simulator limits raised, SQLite in a temporary directory)...")
            self.result["db"] = s.db
            stack = BenchStack(workdir, say=say, extra_env={"LOG_LEVEL": s.log_level, **databases})
            stack.start()
            self.result["pids"] = stack.pids()
            for name, pid in stack.pids().items():
                self.sampler.watch(name, pid)
            self.result["simulator_limits"] = stack.limits_response
            walk = {"enabled": True, "interval_ms": s.walk_interval_ms, "step_bps": s.walk_step_bps}
            self.result["simulator_random_walk"] = stack.sim("/sim/v1/random-walk", walk)
            symbols = self.symbols(stack)
            started = time.perf_counter()
            users = asyncio.run(create_users(stack.env["USER_SERVICE_ADDR"], stack.admin_token, s.users, self.run_id))
            say(f"Created {len(users)} users with balances and API keys in {time.perf_counter() - started:.1f} s")
            self.idle()
            load = self.load(stack, users, symbols, workdir)
            self.ledgers(stack, users)
            with contextlib.suppress(OSError, ValueError):
                self.result["simulator_stats"] = stack.sim("/sim/v1/stats")
            self.compose(load)
        except (LaunchError, RuntimeError, OSError) as exc:
            say(f"bench: {exc}")
            if stack is not None:
                for name in stack.logs:
                    tail = stack.tail(name, 10)
                    if tail:
                        say(f"--- {name} log (last lines) ---\n{tail}")
            return 1
        except (KeyboardInterrupt, _Interrupted):
            say("bench: interrupted; stopping everything")
            return 130
        finally:
            if stack is not None:
                say("Stopping the stack...")
                stack.stop()
            if postgres is not None:
                postgres.stop()
            self.sampler.stop()
            if s.keep:
                say(f"Kept {workdir}")
            else:
                _remove_tree(workdir)
        self.finish()
        failed = any(v["status"] == "FAIL" for v in self.result["targets"])
        return 3 if (failed and s.strict) else 0

    def compose(self, load: dict[str, Any]) -> None:
        """Assemble the result from the load process's figures and the sampler's."""
        s = self.s
        result = self.result
        reported = [p for p in load["phases"] if p["name"] != "warmup"]
        result["phases"] = reported
        if load.get("serial"):
            result["serial"] = load["serial"]
        main_phase = reported[0] if reported else None
        public_keys = ("target_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "error_rate")
        if main_phase is not None:
            summary = {k: main_phase[k] for k in public_keys}
            summary.update({k: v for k, v in main_phase.items() if k not in public_keys})
            if s.mode == "soak":
                result["soak"] = summary
            result["fixed_rate"] = summary
            fills = main_phase["fill_latency"]
            result["fill_latency_p50_ms"] = fills["p50_ms"]
            result["fill_latency_p95_ms"] = fills["p95_ms"]
            result["fill_latency_p99_ms"] = fills["p99_ms"]
        sat = load.get("saturation")
        if sat:
            best = sat.get("best") or {}
            result["saturation"] = {
                "achieved_rps": best.get("achieved_rps", 0.0),
                "p95_ms": best.get("p95_ms"),
                "error_rate": best.get("error_rate", 1.0 if not best else 0.0),
                "target_rps": best.get("target_rps"),
                "p50_ms": best.get("p50_ms"),
                "p99_ms": best.get("p99_ms"),
                "generator_cpu_pct": best.get("generator_cpu_pct"),
                "stop_reason": sat.get("stop_reason"),
                "sustainable": _step_brief(sat.get("sustainable")),
                "curve": sat.get("curve", []),
            }
            echo = result.get("echo_rps")
            result["ratio_to_echo"] = round(result["saturation"]["achieved_rps"] / echo, 4) if echo else None
        else:
            result.setdefault("ratio_to_echo", None)
        result.setdefault("echo_rps", None)
        procs = [*report.SERVICES, "load_generator"]
        peaks = self.sampler.peak_rss_mb(procs)
        result["peak_rss_mb"] = {name: peaks.get(name, 0.0) for name in procs}
        result["peak_rss_total_mb"] = round(sum(peaks.get(n, 0.0) for n in report.SERVICES), 1)
        cpu = self.sampler.phase_cpu()
        result["cpu_pct"] = cpu
        shown = ["idle"] if "idle" in cpu else []
        shown += [p["name"] for p in reported]
        if sat and sat.get("best"):
            shown.append(sat["best"]["name"])
        result["cpu_phases_shown"] = shown
        # CPU milliseconds per successful request, per process: what each order costs each service.
        achieved = {p["name"]: p["achieved_rps"] for p in [*reported, *((sat or {}).get("curve") or [])]}
        result["cpu_ms_per_request"] = {
            phase: {
                name: round(10 * share / achieved[phase], 3)
                for name, share in cpu[phase]["cpu_pct"].items()
                if achieved.get(phase)
            }
            for phase in shown
            if phase in cpu and achieved.get(phase)
        }
        main_cpu = result["cpu_ms_per_request"].get(main_phase["name"]) if main_phase is not None else None
        if main_cpu:
            result["core_cpu_ms_per_request"] = report.core_cpu_ms(main_cpu)
        if main_phase is not None and main_phase["name"] in cpu:
            shares = cpu[main_phase["name"]]["cpu_pct"]
            services_cpu = sum(shares.get(n, 0.0) for n in report.SERVICES)
            result["fixed_rate_services_cpu_pct_of_machine"] = round(services_cpu / (os.cpu_count() or 1), 1)
        if s.mode == "soak" and main_phase is not None:
            self._soak_memory(main_phase)
        result["load"] = {k: v for k, v in load.items() if k not in ("phases", "saturation", "ticks")}
        result["rss_series"] = {k: [(round(t, 2), round(r, 1)) for t, r in v] for k, v in self.sampler.series().items()}
        if self.profile_files:
            result["profiles"] = {
                name: {"file": str(path), "summary": profiles.summarize(path, 25, self.profile_seconds.get(name))}
                for name, path in self.profile_files.items()
            }
        if self.perf_files and self.s.profile_dir is not None:
            perf = shutil.which("perf") or "perf"
            result["perf_by_library"] = {
                name: profiles.perf_by_library(perf, path) for name, path in self.perf_files.items()
            }
        result["targets"] = report.soak_verdicts(result) if s.mode == "soak" else report.bench_verdicts(result)

    def _soak_memory(self, phase: dict[str, Any]) -> None:
        """RSS at the soak's start (first 10 s after warm-up) and end (last 10 s): growth in %."""
        start, end = phase["wall0"], phase["wall0"] + phase["span_s"]
        window = min(10.0, max(phase["span_s"] / 10, 1.0))
        soak = self.result["soak"]
        growth = {}
        first_total = last_total = 0.0
        for name in report.SERVICES:
            first = self.sampler.mean_rss_mb(name, start, start + window)
            last = self.sampler.mean_rss_mb(name, end - window, end)
            if first and last:
                growth[name] = {
                    "start_mb": round(first, 1),
                    "end_mb": round(last, 1),
                    "pct": round(100 * (last / first - 1), 2),
                }
                first_total += first
                last_total += last
        soak["rss_growth"] = growth
        soak["rss_start_total_mb"] = round(first_total, 1)
        soak["rss_end_total_mb"] = round(last_total, 1)
        soak["rss_growth_pct_total"] = round(100 * (last_total / first_total - 1), 2) if first_total else None
        soak["ledger_consistent"] = (self.result.get("ledger") or {}).get("consistent")

    def finish(self) -> None:
        """Print the table and the profile summaries; write the JSON and the PNG."""
        s = self.s
        json_path = s.results_dir / f"{s.name}.json"
        png_path = s.results_dir / f"{s.name}.png"
        say("")
        say(report.table(self.result))
        for name, data in (self.result.get("profiles") or {}).items():
            say("")
            say(profiles.render(name, data["summary"], 12))
        for name, rows in (self.result.get("perf_by_library") or {}).items():
            say(f"== {name}: CPU by library (perf)")
            for row in rows:
                say(f"  {row['pct']:5.1f}%  {row['library']}")
        for note in self.result["notes"]:
            say(f"Note: {note}")
        report.write_json(self.result, json_path)
        try:
            report.plot(self.result, png_path)
        except Exception as exc:  # a plot must never cost the figures
            say(f"Note: could not draw {png_path}: {exc}")
        say(f"\nWrote {json_path} and {png_path}")


def _step_brief(step: dict[str, Any] | None) -> dict[str, Any] | None:
    """The highest step that kept up (>= 90% of offered, <= 1% errors, p95 <= 1 s): offered, achieved, p95."""
    if not step:
        return None
    return {k: step[k] for k in ("target_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "error_rate")}


def _ms(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.1f}"


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark as the command line asks."""
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return Run(settings).execute()
