"""Who may call the gateway: the service token calls everything, the admin token the operators' reads.

The gateway serves the other services. Its internal RPCs (placing, cancelling and querying orders, the
execution stream, and any RPC not listed in ``ADMIN_READS``) accept only the service token; the admin
token may read the account, the rate limits, the symbol rules and prices, foreign orders and anomalies
(``ADMIN_READS``) but never opens an internal RPC. With TLS on (``TRADING_TLS_DIR``) the service token
counts only on the mutual TLS internal port, from the certificate of a service meant to call the RPC
(``SERVICE_PEERS``: the order service calls everything, the user service ``ListSymbolRules``); from
users' port or another service's certificate it is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from shared.auth import bearer_token, same_secret
from shared.errors import DomainError, PermissionDenied, Unauthenticated
from shared.logs import security_log
from shared.server import Context
from shared.tls import ServicePeers

SERVICE_PREFIX = "/trading.gateway.v1.ExchangeGateway/"
ADMIN_READS = frozenset(
    {
        "GetSymbolRules",
        "ListSymbolRules",
        "GetLastPrice",
        "GetAccountBalances",
        "GetRateLimitStatus",
        "ListForeignOrders",
        "ListAnomalies",
    }
)
"""The RPCs the admin token may call besides the service token: operators' reads of the account."""

SERVICE_PEERS = ServicePeers(
    callers={"ListSymbolRules": frozenset({"order_service", "user_service"})},
    default=frozenset({"order_service"}),
)
"""The services whose certificate may use the service token, per RPC (checked with TLS on)."""

SERVICE = "service"
ADMIN = "admin"


def authorize(method: str, metadata: Any, *, service_token: str, admin_token: str) -> str:
    """Return who calls (``SERVICE`` or ``ADMIN``); raise Unauthenticated or PermissionDenied if they may not."""
    try:
        token = bearer_token(metadata)
    except Unauthenticated:
        security_log.warning("gateway call without credentials", extra={"method": method})
        raise
    if same_secret(token, service_token):
        return SERVICE
    if same_secret(token, admin_token):
        if method.rsplit("/", 1)[-1] in ADMIN_READS:
            return ADMIN
        security_log.warning("admin token used on an internal RPC", extra={"method": method})
        raise PermissionDenied(
            "the admin token may only read the account, rules, prices, rate limits, foreign orders and anomalies",
            reason="SERVICE_TOKEN_REQUIRED",
        )
    security_log.warning("gateway call with an unknown token", extra={"method": method})
    raise Unauthenticated("unknown token", reason="INVALID_CREDENTIALS")


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every gateway RPC (health and reflection stay open).

    With ``peers`` (TLS on) a call with the service token also has to come from the certificate of a
    service meant to call it; that is checked when the call runs, where the connection's identity is known.
    """

    def __init__(self, *, service_token: str, admin_token: str, peers: ServicePeers | None = None):
        self.service_token = service_token
        self.admin_token = admin_token
        self.peers = peers

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(SERVICE_PREFIX):
            return handler
        try:
            role = authorize(
                method, details.invocation_metadata, service_token=self.service_token, admin_token=self.admin_token
            )
        except DomainError as exc:
            return _refusal(handler, exc)
        if role == SERVICE and self.peers is not None:
            return _peer_checked(handler, self.peers, method.rsplit("/", 1)[-1])
        return handler


def _peer_checked(
    handler: grpc.RpcMethodHandler[Any, Any], peers: ServicePeers, rpc: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` after checking that the caller's certificate is a service meant to call ``rpc``.

    grpc's stubs type a handler's behaviours as synchronous; on an aio server they are coroutine
    functions and async generator functions, hence the casts.
    """
    if handler.unary_stream is not None:
        streaming = cast(Callable[..., AsyncIterator[Any]], handler.unary_stream)

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            peers.check(context, rpc)
            async for item in streaming(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_unary is None:
        return _refusal(handler, PermissionDenied(f"{rpc} has no unary or server-streaming handler"))
    behavior = cast(Callable[..., Awaitable[Any]], handler.unary_unary)

    async def unary(request: Any, context: Context) -> Any:
        peers.check(context, rpc)
        return await behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _refusal(handler: grpc.RpcMethodHandler[Any, Any], error: DomainError) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that raises ``error`` (the request-context interceptor turns it into a status)."""
    if handler.unary_stream is not None:

        async def stream(_request: Any, _context: Context) -> AsyncIterator[Any]:
            raise error
            yield  # pragma: no cover - makes this an async generator

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def unary(_request: Any, _context: Context) -> Any:
        raise error

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
