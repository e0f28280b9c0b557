"""Start every process of the trading core, wait until each is healthy, and stop them all cleanly.

The launcher imports no service code: it runs ``python -m services.<name>`` as child processes,
exactly as a user or a container would, each in its own session so that a Ctrl-C in the
terminal reaches only the launcher, which then stops the children in reverse order.

Each child writes a ready file (``shared.ready``) with the ports it bound, and the children started
after it are given those addresses: so an address on port 0 (what the tests use) works, and the
children start in dependency order: the simulator, the gateway (which reaches the user service for
its audit trail lazily, and sends nothing there while the user service's port 0 is not bound yet), the
user service (which asks the gateway for the listed assets), then the order service, which calls both.
With ``TRADING_READY_FILE`` set, the launcher writes its own once the stack is up, with every address.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import (
    DEFAULT_EXCHANGE_GATEWAY_ADDR,
    DEFAULT_ORDER_SERVICE_ADDR,
    DEFAULT_SIM_PORT,
    DEFAULT_USER_SERVICE_ADDR,
    REPO_ROOT,
)
from shared.healthcheck import probe, tls_ca
from shared.metrics import DEFAULT_METRICS_ADDRS, METRICS_PATH
from shared.ready import READY_FILE, announce_ready, read_ready
from shared.tls import (
    DEFAULT_EXCHANGE_GATEWAY_INTERNAL_PORT,
    DEFAULT_USER_SERVICE_INTERNAL_PORT,
    EXCHANGE_GATEWAY_INTERNAL_PORT,
    SERVICES,
    TLS_DIR,
    USER_SERVICE_INTERNAL_PORT,
)

STOP_TIMEOUT = 10.0
START_TIMEOUT = 60.0


@dataclass
class Child:
    """One supervised process."""

    name: str
    module: str
    env_var: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class LaunchError(Exception):
    """The stack could not be started; the message says why and what to do."""


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


def port_is_free(addr: str) -> bool:
    """Whether ``host:port`` can be bound right now by a server (which, like ours, sets SO_REUSEADDR).

    SO_REUSEADDR lets a new server bind over connections still in TIME_WAIT from a previous run,
    but not over a socket that is listening, so this detects exactly "someone is serving here".
    """
    host, port = _split(addr)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


TOKENS_FILE = "dev-tokens.env"
"""Where `make run` keeps the development tokens it generated, so a restart keeps them valid."""


def _kept_tokens(keep_dir: Path | None) -> dict[str, str]:
    if keep_dir is None:
        return {}
    path = keep_dir / TOKENS_FILE
    if not path.exists():
        return {}
    kept = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() in ("TRADING_ADMIN_TOKEN", "TRADING_SERVICE_TOKEN") and value.strip():
            kept[name.strip()] = value.strip()
    return kept


def _keep_tokens(keep_dir: Path, tokens: Mapping[str, str]) -> Path:
    keep_dir.mkdir(parents=True, exist_ok=True)
    path = keep_dir / TOKENS_FILE
    # Created readable by the owner only, before the secret is written into it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"{name}={value}\n" for name, value in tokens.items()))
    os.chmod(path, 0o600)
    return path


def build_environment(base: Mapping[str, str], keep_dir: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """Fill in every variable the processes need; return the environment and notes for the banner.

    With ``keep_dir`` (``make run``: ``var/``), development tokens generated for an unset variable are
    kept in ``keep_dir/dev-tokens.env`` (mode 0600) and reused by the next run, so a token a user
    exported stays valid across restarts. A variable set in the environment always wins.
    """
    env = dict(base)
    kept = _kept_tokens(keep_dir)
    generated: dict[str, str] = {}
    notes = []
    env.setdefault("ORDER_SERVICE_ADDR", DEFAULT_ORDER_SERVICE_ADDR)
    env.setdefault("USER_SERVICE_ADDR", DEFAULT_USER_SERVICE_ADDR)
    env.setdefault("EXCHANGE_GATEWAY_ADDR", DEFAULT_EXCHANGE_GATEWAY_ADDR)
    env.setdefault("BINANCE_ENV", "sim")
    env.setdefault("SIM_PORT", str(DEFAULT_SIM_PORT))
    for name, addr in DEFAULT_METRICS_ADDRS.items():
        env.setdefault(name, addr)  # set but empty: that service serves no metrics
    for name, prefix in (("TRADING_ADMIN_TOKEN", "adm"), ("TRADING_SERVICE_TOKEN", "svc")):
        if env.get(name):
            continue
        if name in kept:
            env[name] = kept[name]
            notes.append(f"{name} was not set: using the development value kept in var/{TOKENS_FILE}")
        else:
            env[name] = generated[name] = f"{prefix}_{secrets.token_urlsafe(24)}"
            notes.append(f"{name} was not set: generated a development value")
    if keep_dir is not None and generated:
        path = _keep_tokens(keep_dir, {**kept, **generated})
        notes.append(f"generated tokens are kept in {path} (owner-only) for the next run; delete it to rotate")
    if env["BINANCE_ENV"] == "sim":
        env.setdefault("SIM_RANDOM_WALK", "true")
    if env.get(TLS_DIR):
        # The children run in the repository root: a relative folder is the one the user meant from here.
        env[TLS_DIR] = str(Path(env[TLS_DIR]).resolve())
        env.setdefault(USER_SERVICE_INTERNAL_PORT, str(DEFAULT_USER_SERVICE_INTERNAL_PORT))
        env.setdefault(EXCHANGE_GATEWAY_INTERNAL_PORT, str(DEFAULT_EXCHANGE_GATEWAY_INTERNAL_PORT))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env, notes


def check_tls(env: Mapping[str, str]) -> None:
    """With ``TRADING_TLS_DIR`` set, fail with a clear message unless it holds the CA and every service's pair."""
    directory = env.get(TLS_DIR)
    if not directory:
        return
    wanted = ["ca.crt"] + [f"{service}.{ext}" for service in SERVICES for ext in ("crt", "key")]
    missing = [name for name in wanted if not (Path(directory) / name).is_file()]
    if missing:
        raise LaunchError(
            f"{TLS_DIR}={directory} lacks {', '.join(missing)}: `make certs` writes a development set to var/tls"
        )


INTERNAL_PORTS = {"user_service": USER_SERVICE_INTERNAL_PORT, "exchange_gateway": EXCHANGE_GATEWAY_INTERNAL_PORT}
"""The variable of the mutual TLS port of each service the others call (with TLS only)."""


def internal_addr(env: Mapping[str, str], name: str, addr_variable: str) -> str:
    """The internal (mutual TLS) address of ``name``: its port on the host of its address."""
    host = env[addr_variable].rsplit(":", 1)[0]
    return f"{host}:{env[INTERNAL_PORTS[name]]}"


def plan(env: Mapping[str, str]) -> list[Child]:
    """The processes to start, in start order (each after those whose address it needs)."""
    children = []
    if env["BINANCE_ENV"] == "sim":
        children.append(Child("exchange_simulator", "services.exchange_simulator", "SIM_PORT"))
    children += [
        Child("exchange_gateway", "services.exchange_gateway", "EXCHANGE_GATEWAY_ADDR"),
        Child("user_service", "services.user_service", "USER_SERVICE_ADDR"),
        Child("order_service", "services.order_service", "ORDER_SERVICE_ADDR"),
    ]
    return children


def health_target(child: Child, env: Mapping[str, str]) -> str:
    """Where the launcher asks whether ``child`` is healthy: host:port for gRPC health, or the simulator's ping URL."""
    if child.env_var == "SIM_PORT":
        return f"http://127.0.0.1:{env['SIM_PORT']}/api/v3/ping"
    return env[child.env_var]


def ready_target(child: Child, ready_file: Path, env: dict[str, str]) -> str:
    """``child``'s health target once its ready file is written (its addresses passed on into ``env``), else ""."""
    record = read_ready(ready_file)
    if record is None:
        return ""
    env.update(passed_on(child, record, env))
    return health_target(child, env)


ADDRESS_VARIABLES = ("ORDER_SERVICE_ADDR", "USER_SERVICE_ADDR", "EXCHANGE_GATEWAY_ADDR")


def child_env(env: Mapping[str, str], child: Child, ready_file: Path) -> dict[str, str]:
    """``child``'s environment: the stack's, its ready file, and no address of a service not bound yet.

    Only the gateway meets one (the user service's, on port 0, is bound after it): its audit trail
    then sends nothing, rather than to a port that means "any".
    """
    own = {child.env_var, READY_FILE}
    unbound = [v for v in ADDRESS_VARIABLES if v not in own and env.get(v, "").endswith(":0")]
    return {**env, **{variable: "" for variable in unbound}, READY_FILE: str(ready_file)}


def _connect_host(addr: str) -> str:
    host = addr.rsplit(":", 1)[0] if ":" in addr else ""
    return "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::") else host


def passed_on(child: Child, record: Mapping[str, object], env: Mapping[str, str]) -> dict[str, str]:
    """The variables that tell the others where ``child`` listens, from its ready file's record."""
    if child.env_var == "SIM_PORT":
        return {"SIM_PORT": str(record["http_port"])}
    variables = {child.env_var: f"{_connect_host(env[child.env_var])}:{record['grpc_port']}"}
    metrics = METRICS_VARIABLES[child.name]
    if "metrics_port" in record:
        variables[metrics] = f"{_connect_host(env.get(metrics, ''))}:{record['metrics_port']}"
    if "internal_port" in record and child.name in INTERNAL_PORTS:
        variables[INTERNAL_PORTS[child.name]] = str(record["internal_port"])
    return variables


METRICS_VARIABLES = {
    "order_service": "ORDER_METRICS_ADDR",
    "user_service": "USER_METRICS_ADDR",
    "exchange_gateway": "GATEWAY_METRICS_ADDR",
}
"""The variable that says where each service serves Prometheus /metrics."""


def metrics_urls(env: Mapping[str, str]) -> dict[str, str]:
    """Each service's /metrics URL (services whose metrics are turned off are left out)."""
    urls = {}
    for name, variable in METRICS_VARIABLES.items():
        addr = env.get(variable, DEFAULT_METRICS_ADDRS[variable])
        if addr:
            urls[name] = f"http://{addr}{METRICS_PATH}"
    return urls


def check_ports(children: list[Child], env: Mapping[str, str]) -> None:
    """Fail with a clear message if an address is taken (another `make run`, most likely); port 0 never is."""
    for child in children:
        addr = f"127.0.0.1:{env['SIM_PORT']}" if child.env_var == "SIM_PORT" else env[child.env_var]
        wanted = [(addr, child.env_var)]
        if env.get(TLS_DIR) and child.name in INTERNAL_PORTS:
            wanted.append((internal_addr(env, child.name, child.env_var), INTERNAL_PORTS[child.name]))
        metrics = METRICS_VARIABLES.get(child.name)
        if metrics and env.get(metrics):
            wanted.append((env[metrics], metrics))
        for address, variable in wanted:
            if not port_is_free(address):
                raise LaunchError(
                    f"{address} ({variable}, {child.name}) is already in use: is another `make run` running? "
                    f"Stop it, or set {variable} to a free address."
                )


class Stack:
    """Starts, watches and stops the children."""

    def __init__(self, env: dict[str, str], children: list[Child], out: object = sys.stdout):
        self.env = env
        self.children = children
        self.out = out
        self._stopping = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)  # type: ignore[call-overload]

    def start(self) -> None:
        """Start each child, read the ports it bound, and wait for it to be healthy before the next one.

        The ports it reports go into ``env`` for the children started after it (and the banner).
        Health is asked over TLS when it is on.
        """
        ca = tls_ca(self.env)
        with tempfile.TemporaryDirectory(prefix="trading-ready-") as ready_dir:
            for child in self.children:
                ready_file = Path(ready_dir) / f"{child.name}.json"
                child.process = subprocess.Popen(
                    [sys.executable, "-m", child.module],
                    cwd=REPO_ROOT,
                    env=child_env(self.env, child, ready_file),
                    start_new_session=True,
                )
                if not self._until_healthy(child, ready_file, ca):
                    return
                self.say(f"  {child.name:<18} healthy (pid {child.process.pid})")

    def _until_healthy(self, child: Child, ready_file: Path, ca: bytes | None) -> bool:
        """Wait for ``child``'s ready file, pass its ports on, then wait until it is healthy; False if stopping."""
        assert child.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        target = ""
        while not (target and probe(target, ca=None if target.startswith("http") else ca)):
            if self._stopping:
                return False
            if child.process.poll() is not None:
                raise LaunchError(f"{child.name} exited with code {child.process.returncode} while starting")
            if time.monotonic() > deadline:
                raise LaunchError(f"{child.name} did not become healthy within {START_TIMEOUT:.0f} s")
            if not target:
                target = ready_target(child, ready_file, self.env)
                if target:
                    continue
            time.sleep(0.1)
        return True

    def stop(self) -> None:
        """SIGTERM every child in reverse order, wait, then SIGKILL what is left."""
        self._stopping = True
        running = [c for c in reversed(self.children) if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            try:
                child.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            # Stop in order: the order service drains before the services it calls go away.
            try:
                child.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.say(f"  {child.name} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()

    def first_exited(self) -> Child | None:
        """A child that exited on its own, if any."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None


def banner(env: Mapping[str, str], notes: list[str]) -> str:
    """What a newcomer needs to start talking to the stack."""
    grpcurl = str(REPO_ROOT / ".venv" / "bin" / "grpcurl")
    admin = env["TRADING_ADMIN_TOKEN"]
    user = env["USER_SERVICE_ADDR"]
    lines = [
        "",
        "Trading core is up.",
        f"  OrderService      {env['ORDER_SERVICE_ADDR']}   (trading.order.v1.OrderService)",
        f"  UserService       {user}   (trading.user.v1.UserService)",
        f"  ExchangeGateway   {env['EXCHANGE_GATEWAY_ADDR']}   (trading.gateway.v1.ExchangeGateway)",
    ]
    if env["BINANCE_ENV"] == "sim":
        sim = f"http://127.0.0.1:{env['SIM_PORT']}"
        lines.append(f"  Exchange simulator {sim}  (Binance spot API stand-in, random walk on)")
    else:
        lines.append(f"  Exchange          Binance {env['BINANCE_ENV']}")
    urls = metrics_urls(env)
    if urls:
        lines += ["", "Prometheus metrics (deploy/prometheus.yml scrapes these):"]
        lines += [f"  {name:<18} {url}" for name, url in urls.items()]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        lines.append(f"Traces are exported over OTLP to {env['OTEL_EXPORTER_OTLP_ENDPOINT']}")
    tls_dir = env.get(TLS_DIR, "")
    if tls_dir:
        ca = str(Path(tls_dir) / "ca.crt")
        security = f"-cacert {ca}"
        internal = ", ".join(
            internal_addr(env, name, variable)
            for name, variable in (("user_service", "USER_SERVICE_ADDR"), ("exchange_gateway", "EXCHANGE_GATEWAY_ADDR"))
        )
        lines += [
            "",
            f"TLS on every port ({TLS_DIR}={tls_dir}): clients need only the CA ({ca}).",
            f"  The services call each other with mutual TLS on {internal}.",
        ]
    else:
        security = "-plaintext"
        lines += ["", f"Plaintext on loopback. For TLS: make certs, then {TLS_DIR}=var/tls make run"]
    lines += [
        "",
        f"Admin token: {admin}",
        *[f"Note: {n}" for n in notes],
        "",
        "In another terminal:",
        f"  export ADMIN='{admin}'",
        f"  export G='{grpcurl}'",
        "",
        "Try:",
        f"  {grpcurl} {security} {user} list",
        f"  {grpcurl} {security} {user} describe trading.user.v1.UserService",
        f"  {grpcurl} {security} -H 'authorization: Bearer {admin}' \\",
        """      -d '{"username": "alice", "email": "alice@example.com"}' \\""",
        f"      {user} trading.user.v1.UserService/CreateUser",
        "  (the README walks through deposits, API keys and orders)",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the stack until SIGINT or SIGTERM; exit 0 after a clean stop."""
    # Where the development tokens are kept between runs (the databases follow *_DB_URL).
    keep_dir = Path(os.environ.get("TRADING_VAR_DIR") or REPO_ROOT / "var")
    env, notes = build_environment(os.environ, keep_dir)
    children = plan(env)
    try:
        check_tls(env)
        check_ports(children, env)
    except LaunchError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    Path(REPO_ROOT / "var").mkdir(exist_ok=True)
    keep_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(env, children)
    stop_requested = False

    def _request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        stack._stopping = True

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    print("Starting the trading core...", flush=True)
    code = 0
    try:
        stack.start()
        if not stop_requested:
            print(banner(env, notes), flush=True)
            variables = (*ADDRESS_VARIABLES, "SIM_PORT", *METRICS_VARIABLES.values(), *INTERNAL_PORTS.values())
            announce_ready("launcher", {"addresses": {v: env[v] for v in variables if v in env}})
        while not stop_requested:
            dead = stack.first_exited()
            if dead is not None:
                returncode = dead.process.returncode if dead.process else "?"
                print(f"make run: {dead.name} exited unexpectedly (code {returncode})", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    except LaunchError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("Stopping...", flush=True)
        stack.stop()
        print("Stopped.", flush=True)
    return code
