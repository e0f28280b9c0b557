"""gRPC aio server bootstrap shared by the services.

``create_server`` returns ``(server, port, health, internal_port)``: health and reflection are registered,
the request-context interceptor (request ids, access log: every call at DEBUG, failures at
WARNING; a ``DomainError`` mapped to its status by ``shared.grpc_errors``; with a ``Telemetry``,
the go-grpc-prometheus server metrics and a SERVER span per call, child of the caller's span from
the ``traceparent`` metadata; with ``max_in_flight``, load shedding by ``Admission``) wraps every
handler, and SO_REUSEPORT is off so that a port clash is an error instead of two servers sharing a port.
With TLS (``shared.tls``) the address serves TLS only and a called service adds its mutual TLS port;
plaintext is refused on a non-loopback address unless explicitly allowed.
``wait_for_signal`` returns on SIGTERM or SIGINT; each service's ``stop()`` then flips health to
NOT_SERVING first, ends its server streams, stops the server with a grace period and cleans up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer
from opentelemetry import context as otel_context
from opentelemetry import trace

from shared.errors import DomainError, ResourceExhausted
from shared.grpc_errors import internal_status, status_code, to_status
from shared.logs import request_id_var
from shared.tls import ServerSecurity, ServiceIdentity, check_plaintext_bind
from shared.tracing import SpanKind, context_from_metadata, error_status

if TYPE_CHECKING:
    from shared.telemetry import Telemetry

log = logging.getLogger("grpc.server")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
"""A call's context on a grpc.aio server (grpc's stubs make it generic in messages no handler here needs)."""

REQUEST_ID = "x-request-id"
DESCRIPTOR_SET = Path(__file__).resolve().parent.parent / "gen" / "descriptors.binpb"

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


@dataclass(frozen=True)
class Registration:
    """One gRPC service to host: its full name, the generated ``add_..._to_server`` and the servicer."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


class PortInUse(RuntimeError):
    """The address is taken, most likely by another running instance."""


# --- errors, request ids and access log -------------------------------------------------------


# Request ids for calls that bring none: a random per-process prefix plus a counter. Unique across
# processes and restarts in practice, and far cheaper than a ULID on every call (it showed in profiles).
_REQUEST_ID_PREFIX = secrets.token_hex(4)
_request_counter = itertools.count(1)


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID and value:
            return str(value)[:64]
    return f"{_REQUEST_ID_PREFIX}-{next(_request_counter):x}"


def _code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, DomainError):
        return status_code(exc)
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    return grpc.StatusCode.INTERNAL


# Server-side codes that mean the server failed (OpenTelemetry's RPC conventions); the others are the
# caller's business (a bad argument, a missing order) and leave the span's status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _Observed:
    """One call's metrics and span (only with a ``Telemetry``)."""

    __slots__ = ("metrics", "span", "telemetry", "token")

    def __init__(self, telemetry: Telemetry, details: grpc.HandlerCallDetails, grpc_type: str):
        method = details.method
        self.telemetry = telemetry
        self.metrics = telemetry.grpc_server.of(grpc_type, method)
        self.metrics.started.inc()
        if not telemetry.tracing:
            self.span = None
            return
        service, name = self.metrics.labels[1], self.metrics.labels[2]
        self.span = telemetry.tracer.start_span(
            f"{service}/{name}",
            context=context_from_metadata(details.invocation_metadata),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def shed(self) -> None:
        """Count the call as refused by load shedding (``Admission``)."""
        self.telemetry.grpc_server.shed.labels(self.metrics.labels[1], self.metrics.labels[2]).inc()

    def done(self, code: grpc.StatusCode, started: float) -> None:
        self.metrics.done(code, time.perf_counter() - started)
        span = self.span
        if span is None:
            return
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                span.set_status(error_status(code.name))
        span.end()
        otel_context.detach(self.token)


class Admission:
    """Load shedding: at most ``limit`` unary calls in progress (0: no limit); more are refused at once.

    A refused call ends RESOURCE_EXHAUSTED (reason OVERLOADED, with a retry delay) before its handler
    runs, so an overloaded server keeps a bounded backlog and answers the calls it took in time
    instead of letting every caller wait towards its deadline. Server streams (watchers) are not
    counted: they are long-lived and cost nothing while idle. Refusals are logged once a second at
    most, as a count, not one line each.
    """

    RETRY_AFTER_S = 0.5
    LOG_EVERY_S = 1.0

    def __init__(self, limit: int):
        if limit < 0:
            raise ValueError("the in-flight limit must not be negative")
        self.limit = limit
        self.in_flight = 0
        self.refused = 0
        self._unlogged = 0
        self._logged_at = 0.0

    def enter(self, method: str) -> bool:
        """Admit a call (True) or raise ResourceExhausted when ``limit`` calls are in progress."""
        if self.limit and self.in_flight >= self.limit:
            self.refused += 1
            self._unlogged += 1
            now = time.monotonic()
            if now - self._logged_at >= self.LOG_EVERY_S:
                log.warning(
                    "overloaded: calls refused",
                    extra={"refused": self._unlogged, "limit": self.limit, "method": method},
                )
                self._unlogged = 0
                self._logged_at = now
            raise ResourceExhausted(
                f"the server has {self.limit} calls in progress, its limit; try again shortly",
                retry_after=self.RETRY_AFTER_S,
                reason="OVERLOADED",
            )
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Binds a request id, logs one access line per call and maps exceptions to statuses.

    A ``DomainError`` becomes its rich status (``shared.grpc_errors.to_status``); anything else
    becomes INTERNAL with a generic message while the traceback goes to the log, never to the
    client. With ``telemetry`` it also counts the call (go-grpc-prometheus metrics) and runs it
    inside a SERVER span.
    """

    def __init__(self, access_log: bool = True, telemetry: Telemetry | None = None, max_in_flight: int = 0):
        self.access_log = access_log
        self.telemetry = telemetry
        self.admission = Admission(max_in_flight)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if method.startswith("/grpc.reflection.") or method.startswith("/grpc.health."):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _done(self, method: str, code: grpc.StatusCode, started: float) -> None:
        # Successful calls are logged at DEBUG: at hundreds of calls per second an INFO line per call
        # cost a quarter of a service's CPU. Failures are always logged (WARNING).
        if not self.access_log:
            return
        level = logging.DEBUG if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) else logging.WARNING
        if log.isEnabledFor(level):
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            log.log(level, "rpc", extra={"method": method, "code": code.name, "ms": elapsed_ms})

    async def _fail(self, context: Context, exc: BaseException, method: str) -> grpc.StatusCode:
        if isinstance(exc, DomainError):
            await context.abort_with_status(to_status(exc))  # type: ignore[attr-defined]
            return status_code(exc)  # pragma: no cover - abort raises
        if isinstance(exc, NotImplementedError):
            # The generated base class of an RPC that is not built yet.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
            return grpc.StatusCode.UNIMPLEMENTED  # pragma: no cover - abort raises
        log.exception("unexpected error in %s", method)
        await context.abort_with_status(internal_status())  # type: ignore[attr-defined]
        return grpc.StatusCode.INTERNAL  # pragma: no cover - abort raises

    def _wrap_unary(self, behavior: Callable[..., Any], details: grpc.HandlerCallDetails) -> Callable[..., Any]:
        method = details.method

        telemetry = self.telemetry

        admission = self.admission

        async def wrapper(request: Any, context: Context) -> Any:
            token = request_id_var.set(_request_id(details))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            observed = _Observed(telemetry, details, "unary") if telemetry is not None else None
            admitted = False
            try:
                admitted = admission.enter(method)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = _code_of(exc)
                await self._fail(context, exc, method)
            finally:
                if admitted:
                    admission.leave()
                    self._done(method, code, started)
                if observed is not None:
                    observed.done(code, started)
                    if not admitted:
                        observed.shed()
                request_id_var.reset(token)

        return wrapper

    def _wrap_stream(self, behavior: Callable[..., Any], details: grpc.HandlerCallDetails) -> Callable[..., Any]:
        method = details.method

        telemetry = self.telemetry

        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            token = request_id_var.set(_request_id(details))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            observed = _Observed(telemetry, details, "server_stream") if telemetry is not None else None
            try:
                async for item in behavior(request, context):
                    if observed is not None:
                        observed.metrics.msg.inc()
                    yield item
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = _code_of(exc)
                await self._fail(context, exc, method)
            finally:
                self._done(method, code, started)
                if observed is not None:
                    observed.done(code, started)
                request_id_var.reset(token)

        return wrapper


# --- reflection that keeps the proto comments ---------------------------------------------------


def _load_descriptor_set(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    file_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return {f.name: f.SerializeToString() for f in file_set.file}


class CommentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]  # grpc_reflection is untyped
    """Server reflection that serves our files with their source comments.

    The generated ``_pb2`` modules drop comments, so stock reflection would show grpcurl
    ``describe`` without them. ``make gen`` writes a descriptor set with source info; this
    servicer answers from it and falls back to the default pool for anything else.
    """

    def __init__(self, service_names: Iterable[str], descriptor_set: Path = DESCRIPTOR_SET):
        super().__init__(service_names)
        self._raw = _load_descriptor_set(descriptor_set)

    def _response(self, descriptor: Any, request: Any) -> Any:
        seen: dict[str, Any] = {}
        stack = [descriptor]
        while stack:
            current = stack.pop()
            if current.name in seen:
                continue
            seen[current.name] = current
            stack.extend(current.dependencies)
        serialized = []
        for name, file_descriptor in seen.items():
            raw = self._raw.get(name)
            if raw is None:
                proto = descriptor_pb2.FileDescriptorProto()
                file_descriptor.CopyToProto(proto)
                raw = proto.SerializeToString()
            serialized.append(raw)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(file_descriptor_proto=serialized),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            descriptor = descriptor_pool.Default().FindFileByName(filename)  # type: ignore[no-untyped-call]
        except KeyError:
            return super()._file_by_filename(request, filename)
        return self._response(descriptor, request)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            descriptor = descriptor_pool.Default().FindFileContainingSymbol(fully_qualified_name)  # type: ignore[no-untyped-call]
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._response(descriptor, request)


# --- lifecycle ----------------------------------------------------------------------------------


async def create_server(
    bind: str,
    registrations: Sequence[Registration],
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    access_log: bool = True,
    options: Sequence[tuple[str, Any]] = (),
    telemetry: Telemetry | None = None,
    security: ServerSecurity | None = None,
    max_in_flight: int = 0,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer, int | None]:
    """Start an aio server on ``bind`` (port 0 picks a free port); return (server, port, health, internal_port).

    With ``telemetry`` every call is counted and traced (health and reflection excepted). ``security``
    (see ``shared.tls``) serves TLS only, plus a mutual TLS internal port when it has one (port 0 there
    picks a free one too; ``internal_port`` is the port bound, None without); without a certificate the
    server is plaintext, which it refuses on a non-loopback ``bind`` unless allowed. ``max_in_flight``
    (0: no limit) sheds unary calls beyond that many in progress (``Admission``).
    """
    security = security or ServerSecurity()
    if security.identity is None:
        check_plaintext_bind(bind, security.variable, security.allow_plaintext)
    server = grpc.aio.server(
        interceptors=[RequestContextInterceptor(access_log, telemetry, max_in_flight), *interceptors],
        options=[*SERVER_OPTIONS, *options],
    )
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [r.name for r in registrations]
    if telemetry is not None:
        telemetry.grpc_server.preset(names)
    reflection_servicer = CommentedReflectionServicer([*names, health.SERVICE_NAME, reflection.SERVICE_NAME])
    reflection_pb2_grpc_add(reflection_servicer, server)
    port = _listen(server, bind, security.identity, require_client_auth=False)
    internal = security.internal_bind(bind)
    internal_port = None
    if internal is not None:
        internal_port = _listen(server, internal, security.identity, require_client_auth=True)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer, internal_port


def _listen(server: grpc.aio.Server, bind: str, identity: ServiceIdentity | None, *, require_client_auth: bool) -> int:
    """Bind ``bind`` (TLS with ``identity``, else plaintext) and return the port; PortInUse if it cannot."""
    try:
        if identity is None:
            port = server.add_insecure_port(bind)
        else:
            port = server.add_secure_port(bind, identity.server_credentials(require_client_auth=require_client_auth))
    except RuntimeError as exc:
        raise PortInUse(f"cannot listen on {bind}: the address is in use or invalid") from exc
    return port


def reflection_pb2_grpc_add(servicer: ReflectionServicer, server: grpc.aio.Server) -> None:
    """Register the reflection servicer (grpcio-reflection ships only v1alpha)."""
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)


async def wait_for_signal() -> None:
    """Return when the process gets SIGTERM or SIGINT (each service's ``stop()`` then shuts down in its order)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("shutting down")


def install_uvloop() -> None:
    """Use uvloop for the event loop when it is installed (measured faster here; see README)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
