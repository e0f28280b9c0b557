"""Prometheus metrics: a registry per service, the gRPC and database families, and the /metrics server.

Each service's bootstrap owns one ``CollectorRegistry`` (never the global default, so that services
started together in one process stay apart) and serves it over HTTP at ``/metrics`` on its
``*_METRICS_ADDR``, on the service's own event loop: a scrape reads the services' in-memory state
where it lives, and a service whose loop is stuck stops answering scrapes (``up`` turns 0).

gRPC metrics use the go-grpc-prometheus names and labels, so the usual dashboards and alerts apply:
``grpc_server_started_total``, ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method,
grpc_code}`` (``grpc_code`` spelt as in gRPC-Go: ``OK``, ``InvalidArgument``, ``Unavailable``...),
``grpc_server_handling_seconds`` (histogram), ``grpc_server_msg_sent_total`` and the same with
``grpc_client_``. Health and reflection calls are not counted (probes would drown the rest).

Label values are bounded: method names from the protos, status code names, fixed names chosen in
the code. Never a user id, an order id, a token or anything a caller typed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from shared.config import ConfigError

DEFAULT_METRICS_ADDRS = {
    "ORDER_METRICS_ADDR": "127.0.0.1:9101",
    "USER_METRICS_ADDR": "127.0.0.1:9102",
    "GATEWAY_METRICS_ADDR": "127.0.0.1:9103",
}
"""Where each service serves /metrics unless its variable says otherwise (empty: not served)."""

METRICS_PATH = "/metrics"

# RPCs inside the stack take milliseconds; the top buckets catch deadlines and streams.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A SQLite transaction is a fraction of a millisecond without fsync, one or two with it.
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

_UNARY = "unary"
_SERVER_STREAM = "server_stream"


def _go_name(code: grpc.StatusCode) -> str:
    """The code as gRPC-Go spells it (``Canceled``, ``InvalidArgument``...), as go-grpc-prometheus labels it."""
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


def metrics_addr(env: Mapping[str, str], name: str) -> str:
    """The ``host:port`` to serve /metrics on from variable ``name`` (set but empty: ``""``, not served)."""
    value = env.get(name)
    if value is None:
        return DEFAULT_METRICS_ADDRS[name]
    value = value.strip()
    if value == "":
        return ""
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name} must be host:port (such as 127.0.0.1:9101) or empty, got {value!r}")
    return value


def new_registry() -> CollectorRegistry:
    """A registry for one service (``_created`` series are left out: they only add noise)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return CollectorRegistry(auto_describe=True)


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _methods(service_names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(grpc_type, service, method) of every method of these services, from the generated descriptors."""
    found = []
    pool = descriptor_pool.Default()  # type: ignore[no-untyped-call]
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            continue
        for method in service.methods:
            kind = _SERVER_STREAM if method.server_streaming else _UNARY
            found.append((kind, name, method.name))
    return found


class _RpcFamily:
    """started / handled / handling_seconds / msg_sent of one side (``grpc_server`` or ``grpc_client``)."""

    def __init__(self, registry: CollectorRegistry, prefix: str, side: str):
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(f"{prefix}_started_total", f"RPCs started on the {side}.", labels, registry=registry)
        self.handled = Counter(
            f"{prefix}_handled_total",
            f"RPCs completed on the {side}, whatever their status.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            f"{prefix}_handling_seconds",
            f"Time from the start of an RPC to its status, on the {side}.",
            labels,
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.msg_sent = Counter(
            f"{prefix}_msg_{'sent' if side == 'server' else 'received'}_total",
            f"Stream messages {'sent by the server' if side == 'server' else 'received by the client'}.",
            labels,
            registry=registry,
        )
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], _RpcChildren] = {}

    def of(self, grpc_type: str, full_method: str) -> _RpcChildren:
        """The labelled series of one method (cached: ``labels()`` costs a lock and a dict lookup)."""
        key = (grpc_type, full_method)
        children = self._children.get(key)
        if children is None:
            with self._lock:
                service, method = split_method(full_method)
                children = _RpcChildren(self, grpc_type, service, method)
                self._children[key] = children
        return children

    def preset(self, service_names: Iterable[str]) -> None:
        """Create every method's series at zero, so that rates and increases exist before the first call."""
        for grpc_type, service, method in _methods(service_names):
            self.of(grpc_type, f"/{service}/{method}").handled_child(grpc.StatusCode.OK)


class _RpcChildren:
    def __init__(self, family: _RpcFamily, grpc_type: str, service: str, method: str):
        self.family = family
        self.labels = (grpc_type, service, method)
        self.started = family.started.labels(*self.labels)
        self.handling = family.handling.labels(*self.labels)
        self.msg = family.msg_sent.labels(*self.labels)
        self._handled: dict[grpc.StatusCode, Counter] = {}

    def handled_child(self, code: grpc.StatusCode) -> Counter:
        child = self._handled.get(code)
        if child is None:
            child = self.family.handled.labels(*self.labels, _go_name(code))
            self._handled[code] = child
        return child

    def done(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count a finished RPC and its duration."""
        self.handled_child(code).inc()
        self.handling.observe(seconds)


class GrpcServerMetrics(_RpcFamily):
    """The go-grpc-prometheus server metrics."""

    def __init__(self, registry: CollectorRegistry):
        super().__init__(registry, "grpc_server", "server")
        self.shed = Counter(
            "trading_calls_shed_total",
            "Calls refused RESOURCE_EXHAUSTED (OVERLOADED) before their handler ran: the server had its limit "
            "of calls in progress.",
            ["grpc_service", "grpc_method"],
            registry=registry,
        )


class GrpcClientMetrics(_RpcFamily):
    """The go-grpc-prometheus client metrics."""

    def __init__(self, registry: CollectorRegistry):
        super().__init__(registry, "grpc_client", "client")


class DatabaseMetrics:
    """Write transactions of the service's database: how long BEGIN to COMMIT took, and how many writes."""

    def __init__(self, registry: CollectorRegistry):
        self.seconds = Histogram(
            "trading_db_commit_seconds",
            "Duration of a write transaction, BEGIN IMMEDIATE to the end of COMMIT (with its fsync).",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.transactions = Counter(
            "trading_db_transactions_total",
            "Write transactions by outcome (committed, or failed: nothing written).",
            ["outcome"],
            registry=registry,
        )
        self.committed = self.transactions.labels("committed")
        self.failed = self.transactions.labels("failed")


def ready_gauge(registry: CollectorRegistry) -> Gauge:
    """``trading_ready``: 1 while the service's own gRPC health status is SERVING."""
    return Gauge(
        "trading_ready",
        "1 while the service reports SERVING for its own service name (it can do its job), else 0.",
        registry=registry,
    )


@dataclass
class MetricsServer:
    """``/metrics`` of one registry over HTTP (aiohttp on the service's event loop)."""

    registry: CollectorRegistry
    runner: web.AppRunner | None = None
    port: int = 0
    host: str = ""

    async def start(self, addr: str) -> int:
        """Listen on ``addr`` (port 0 picks a free one) and return the port; OSError if it is taken."""
        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, int(port), reuse_port=False)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner
        self.host = host
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)
        return self.port

    @property
    def url(self) -> str:
        """Where Prometheus scrapes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

    async def _serve(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def stop(self) -> None:
        """Stop serving."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
