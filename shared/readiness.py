"""Health that tells the truth: the service's own gRPC health status follows whether it can do its job.

Two statuses, for two readers:
- ``""`` (the server as a whole) is liveness: SERVING from start until shutdown begins. A process
  supervisor (Docker, systemd, Kubernetes' liveness probe) restarts on it; a dependency being down
  is no reason to restart a process.
- The service's own name (``trading.order.v1.OrderService``...) is readiness: NOT_SERVING while a
  check fails (the exchange bans us, a dependency cannot be reached). A load balancer, Kubernetes'
  readiness probe and the services' callers route on it.

``Readiness`` runs every check each ``interval`` seconds, sets the status when it changes, logs the
change (WARNING with the reasons, INFO on recovery) and exports ``trading_ready`` and
``trading_readiness_check{check}``. Checks are named in the code (bounded label values) and return
None when fine or a short reason when not. Both statuses go NOT_SERVING at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Gauge

from shared.metrics import ready_gauge

log = logging.getLogger("readiness")

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when the service can rely on what it checks, else why not."""


class Readiness:
    """Keeps the service's own health status equal to the outcome of its checks."""

    def __init__(
        self,
        health_servicer: health.aio.HealthServicer,
        service_name: str,
        checks: Mapping[str, Check],
        *,
        registry: CollectorRegistry | None = None,
        interval: float = 1.0,
    ):
        self.health = health_servicer
        self.service_name = service_name
        self.checks = dict(checks)
        self.interval = interval
        self.ready = True
        self.reasons: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready_gauge: Gauge | None = None
        self._check_gauge: Gauge | None = None
        if registry is not None:
            self._ready_gauge = ready_gauge(registry)
            self._ready_gauge.set(1)
            self._check_gauge = Gauge(
                "trading_readiness_check",
                "1 while the named readiness check passes, else 0 (the service is then NOT_SERVING).",
                ["check"],
                registry=registry,
            )
            for name in self.checks:
                self._check_gauge.labels(name).set(1)

    async def evaluate(self) -> bool:
        """Run every check now and set the status; return whether the service is ready."""
        results = await asyncio.gather(*(self._run(name, check) for name, check in self.checks.items()))
        reasons = {name: reason for name, reason in results if reason is not None}
        if self._check_gauge is not None:
            for name in self.checks:
                self._check_gauge.labels(name).set(0 if name in reasons else 1)
        ready = not reasons
        if ready != self.ready or (not ready and reasons.keys() != self.reasons.keys()):
            if ready:
                log.info("ready again", extra={"service_name": self.service_name})
            else:
                log.warning("not ready", extra={"service_name": self.service_name, "reasons": reasons})
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            await self.health.set(self.service_name, status)
        self.ready, self.reasons = ready, reasons
        if self._ready_gauge is not None:
            self._ready_gauge.set(1 if ready else 0)
        return ready

    @staticmethod
    async def _run(name: str, check: Check) -> tuple[str, str | None]:
        try:
            return name, await check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return name, f"check failed: {type(exc).__name__}"

    def start(self) -> None:
        """Evaluate now and then every ``interval`` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="readiness")

    async def _loop(self) -> None:
        while True:
            try:
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("readiness evaluation failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop evaluating (before the shutdown turns every status NOT_SERVING)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._ready_gauge is not None:
            self._ready_gauge.set(0)


def grpc_dependency(channel: grpc.aio.Channel, *, timeout: float = 1.0) -> Check:
    """A check that the service behind ``channel`` answers its health check ("") with SERVING.

    It asks for the overall status (liveness): a dependency that is up but cannot do all of its own
    job (a gateway the exchange rate limits) still answers the caller, with a precise error.
    """
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()

    async def check() -> str | None:
        try:
            reply = await stub.Check(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"unreachable ({exc.code().name})"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"answers {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
        return None

    return check
