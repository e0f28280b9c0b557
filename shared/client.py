"""gRPC client plumbing for calls between services: one channel per target, deadlines, retries, errors.

Retries live here and only here: the channel's service config retries UNAVAILABLE a few times
with back-off. That is safe because every internal RPC is idempotent on its key (order id,
trade id, release id, client order id). Errors come back as ``shared.errors`` exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from shared.auth import bearer_metadata
from shared.errors import DeadlineExceeded, DomainError, from_rpc_error
from shared.logs import request_id_var
from shared.server import REQUEST_ID

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


def open_channel(target: str) -> grpc.aio.Channel:
    """Open the one channel a process keeps to ``target`` (reuse it; channels multiplex calls)."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


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
