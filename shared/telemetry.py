"""One service's telemetry: its metrics registry and /metrics server, its tracer, and the shared families.

Bootstrap builds it (``Telemetry.create``), hands it to the gRPC server (``create_server``), to its
channels (``open_channel``) and to its database writer (``GroupCommit.observer``, from ``database()``),
serves /metrics on the configured address, and closes it last on the way out (which flushes spans
still being exported).
Tests build it with ``span_processors`` (an in-memory exporter) and ``metrics_addr="127.0.0.1:0"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry

from shared.metrics import (
    DatabaseMetrics,
    GrpcClientMetrics,
    GrpcServerMetrics,
    MetricsServer,
    new_registry,
)
from shared.tracing import TRACER_NAME, SpanKind, error_status, make_tracer_provider

log = logging.getLogger("telemetry")


@dataclass
class Telemetry:
    """Metrics and traces of one service."""

    service: str
    registry: CollectorRegistry
    tracer_provider: TracerProvider
    tracer: trace.Tracer
    grpc_server: GrpcServerMetrics
    grpc_client: GrpcClientMetrics
    db: DatabaseMetrics
    metrics_server: MetricsServer | None = field(default=None)
    tracing: bool = True
    """Whether spans go anywhere. Without an endpoint (or a test's processor) every span would be
    dropped unsampled, so calls and writes skip the span machinery altogether (about 5% of a
    service's CPU per request): such a process takes no part in traces and forwards no trace context."""

    @classmethod
    def create(
        cls, service: str, *, otlp_endpoint: str = "", span_processors: Sequence[SpanProcessor] = ()
    ) -> Telemetry:
        """A fresh registry and tracer provider for ``service`` (its ``service.name`` in traces)."""
        registry = new_registry()
        provider = make_tracer_provider(service, otlp_endpoint, processors=span_processors)
        return cls(
            service=service,
            registry=registry,
            tracer_provider=provider,
            tracer=provider.get_tracer(TRACER_NAME),
            grpc_server=GrpcServerMetrics(registry),
            grpc_client=GrpcClientMetrics(registry),
            db=DatabaseMetrics(registry),
            tracing=bool(otlp_endpoint or span_processors),
        )

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on (the one bound, for port 0), or None when it is not served."""
        return self.metrics_server.port if self.metrics_server is not None else None

    async def serve_metrics(self, addr: str, variable: str) -> MetricsServer | None:
        """Serve /metrics on ``addr`` (empty: not at all); PortInUse naming ``variable`` if it is taken."""
        if not addr:
            return None
        from shared.server import PortInUse

        server = MetricsServer(self.registry)
        try:
            await server.start(addr)
        except OSError as exc:
            raise PortInUse(
                f"cannot serve metrics on {addr} ({variable}): the address is in use or invalid; "
                f"set {variable} to a free address, or to nothing to turn metrics off"
            ) from exc
        self.metrics_server = server
        log.info("metrics served", extra={"url": server.url})
        return server

    def database(self, system: str) -> DatabaseObserver:
        """The observer to give the service's writer (``GroupCommit.observer``); ``system``: sqlite, postgresql."""
        return DatabaseObserver(self.tracer, self.db, system, tracing=self.tracing)

    async def close(self) -> None:
        """Stop serving metrics and flush the spans still queued for export (bounded)."""
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        try:
            self.tracer_provider.force_flush(timeout_millis=3000)
        finally:
            self.tracer_provider.shutdown()


class DatabaseObserver:
    """What ``shared.db``'s writers report: a span per caller's write, the commit time of each transaction."""

    def __init__(self, tracer: trace.Tracer, metrics: DatabaseMetrics, system: str = "sqlite", *, tracing: bool = True):
        self.tracer = tracer
        self.metrics = metrics
        self.attributes = {"db.system.name": system}
        self.tracing = tracing

    def write_started(self) -> Callable[[asyncio.Future[Any]], None]:
        """Start the span of one caller's write (queued, run in a shared transaction, committed).

        It is a child of the caller's current span; the returned callback ends it when the write is
        answered, marked as an error (the exception's type, never its message) if it failed.
        """
        span = self.tracer.start_span("db.write", kind=SpanKind.CLIENT, attributes=self.attributes)

        def answered(future: asyncio.Future[Any]) -> None:
            if span.is_recording():
                if future.cancelled():
                    span.set_status(error_status("cancelled"))
                elif future.exception() is not None:
                    span.set_status(error_status(type(future.exception()).__name__))
            span.end()

        return answered

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Around BEGIN IMMEDIATE ... COMMIT on the writer thread: the commit latency."""
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.metrics.failed.inc()
            raise
        finally:
            self.metrics.seconds.observe(time.perf_counter() - started)
        self.metrics.committed.inc()
