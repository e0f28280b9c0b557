"""Who may call the gateway: the service token calls everything, the admin token the read-only RPCs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from shared.auth import bearer_token, same_secret
from shared.errors import DomainError, PermissionDenied, Unauthenticated
from shared.logs import security_log

SERVICE_PREFIX = "/trading.gateway.v1.ExchangeGateway/"
READ_ONLY = frozenset(
    {
        "GetOrder",
        "GetSymbolRules",
        "ListSymbolRules",
        "GetLastPrice",
        "GetAccountBalances",
        "StreamExecutions",
        "GetRateLimitStatus",
        "ListForeignOrders",
        "ListAnomalies",
    }
)


def authorize(method: str, metadata: Any, *, service_token: str, admin_token: str) -> None:
    """Raise Unauthenticated or PermissionDenied unless the caller may call ``method``."""
    try:
        token = bearer_token(metadata)
    except Unauthenticated:
        security_log.warning("gateway call without credentials", extra={"method": method})
        raise
    if same_secret(token, service_token):
        return
    if same_secret(token, admin_token):
        if method.rsplit("/", 1)[-1] in READ_ONLY:
            return
        security_log.warning("admin token used on a trading RPC", extra={"method": method})
        raise PermissionDenied("the admin token may only call read-only RPCs", reason="SERVICE_TOKEN_REQUIRED")
    security_log.warning("gateway call with an unknown token", extra={"method": method})
    raise Unauthenticated("unknown token", reason="INVALID_CREDENTIALS")


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every gateway RPC (health and reflection stay open)."""

    def __init__(self, *, service_token: str, admin_token: str):
        self.service_token = service_token
        self.admin_token = admin_token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(SERVICE_PREFIX):
            return handler
        try:
            authorize(
                method, details.invocation_metadata, service_token=self.service_token, admin_token=self.admin_token
            )
        except DomainError as exc:
            return _refusal(handler, exc)
        return handler


def _refusal(handler: grpc.RpcMethodHandler, error: DomainError) -> grpc.RpcMethodHandler:
    """A handler that raises ``error`` (the request-context interceptor turns it into a status)."""
    if handler.unary_stream is not None:

        async def stream(_request: Any, _context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            raise error
            yield  # pragma: no cover - makes this an async generator

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def unary(_request: Any, _context: grpc.aio.ServicerContext) -> Any:
        raise error

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
