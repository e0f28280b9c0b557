"""gRPC client plumbing for calls between services: one channel per target, deadlines, retries, errors.

Retries live here and only here: the channel's service config retries UNAVAILABLE a few times
with back-off. That is safe because every internal RPC is idempotent on its key (order id,
trade id, release id, client order id). Errors come back as ``shared.errors`` exceptions.

A channel opened with a ``Telemetry`` counts every call (go-grpc-prometheus client metrics) and
runs it in a CLIENT span whose W3C trace context goes out in the ``traceparent`` metadata, so the
callee's span is its child. Health checks are neither counted nor traced.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from shared.auth import bearer_metadata
from shared.errors import DeadlineExceeded, DomainError, from_rpc_error
from shared.logs import request_id_var
from shared.server import REQUEST_ID
from shared.tls import ServiceIdentity
from shared.tracing import SpanKind, error_status, metadata_with_context

if TYPE_CHECKING:
    from shared.telemetry import Telemetry

Resp = TypeVar("Resp")

_RETRY_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _RETRY_CONFIG),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)


def open_channel(
    target: str, telemetry: Telemetry | None = None, identity: ServiceIdentity | None = None
) -> grpc.aio.Channel:
    """Open the one channel a process keeps to ``target`` (reuse it; channels multiplex calls).

    With ``telemetry`` its calls are counted and traced (see the module docstring). With ``identity``
    the channel is mutual TLS: it verifies the callee with the CA and presents the caller's certificate.
    """
    interceptors = client_interceptors(telemetry) if telemetry is not None else None
    if identity is not None:
        return grpc.aio.secure_channel(
            target, identity.channel_credentials(), options=CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)


# --- client metrics and spans -------------------------------------------------------------------


class _ClientCall:
    """One outgoing call's span and metrics."""

    __slots__ = ("metrics", "span", "started")

    def __init__(self, telemetry: Telemetry, method: str, grpc_type: str):
        self.metrics = telemetry.grpc_client.of(grpc_type, method)
        self.metrics.started.inc()
        service, name = self.metrics.labels[1], self.metrics.labels[2]
        self.span = telemetry.tracer.start_span(
            f"{service}/{name}",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self.started = time.perf_counter()

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """The call's details with this span's trace context in the metadata."""
        metadata = metadata_with_context(details.metadata, self.span)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )

    def done(self, code: grpc.StatusCode) -> None:
        self.metrics.done(code, time.perf_counter() - self.started)
        if self.span.is_recording():
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                self.span.set_status(error_status(code.name))
        self.span.end()


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def _untraced(method: str) -> bool:
    return method.startswith("/grpc.health.")


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        method = _method_name(client_call_details)
        if _untraced(method):
            return await continuation(client_call_details, request)
        call = _ClientCall(self.telemetry, method, "unary")
        code = grpc.StatusCode.UNKNOWN
        try:
            answer = await continuation(call.details(client_call_details), request)
            await answer  # the response (or its error) is kept for the caller's own await
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            call.done(code)
        return answer


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        method = _method_name(client_call_details)
        if _untraced(method):
            return await continuation(client_call_details, request)
        call = _ClientCall(self.telemetry, method, "server_stream")
        try:
            stream = await continuation(call.details(client_call_details), request)
        except BaseException:
            call.done(grpc.StatusCode.UNKNOWN)
            raise

        def finished(done: Any) -> None:
            # The status of a finished call is read with a coroutine: read it on the loop.
            async def record() -> None:
                try:
                    code = await done.code()
                except Exception:
                    code = grpc.StatusCode.UNKNOWN
                call.done(code if code is not None else grpc.StatusCode.UNKNOWN)

            _keep(asyncio.ensure_future(record()))

        stream.add_done_callback(finished)
        return stream


_pending: set[asyncio.Future[None]] = set()


def _keep(future: asyncio.Future[None]) -> None:
    """Hold a reference to a small bookkeeping task until it ends."""
    _pending.add(future)
    future.add_done_callback(_pending.discard)


def client_interceptors(telemetry: Telemetry) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that count and trace a channel's calls."""
    return [_UnaryUnary(telemetry), _UnaryStream(telemetry)]


class ServiceCaller:
    """Calls another service with a bearer token, a deadline and the current request id."""

    def __init__(self, token: str, *, default_timeout: float = 5.0, what: str = ""):
        self._auth = bearer_metadata(token)
        self.default_timeout = default_timeout
        self.what = what

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for an outgoing call: the token and the request id being served, if any."""
        request_id = request_id_var.get()
        if request_id:
            return (*self._auth, (REQUEST_ID, request_id))
        return self._auth

    async def __call__(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Any,
        *,
        timeout: float | None = None,
        wait_for_ready: bool = False,
    ) -> Resp:
        """Invoke ``method(request)``; raise a DomainError for any failure."""
        try:
            return await method(
                request,
                timeout=timeout or self.default_timeout,
                metadata=self.metadata(),
                wait_for_ready=wait_for_ready,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, what=self.what) from None
        except TimeoutError:
            raise DeadlineExceeded(f"{self.what}: deadline exceeded") from None


def remaining(context: grpc.aio.ServicerContext, default: float, *, floor: float = 0.05) -> float:
    """Time left for a downstream call: the caller's deadline (Python does not propagate it) or ``default``."""
    left = context.time_remaining()
    if left is None:
        return default
    return max(floor, min(default, left))


__all__ = ["CHANNEL_OPTIONS", "DomainError", "ServiceCaller", "open_channel", "remaining"]
