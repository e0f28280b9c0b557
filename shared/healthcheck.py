"""Container health probe: ``python -m shared.healthcheck <host:port | http://url> [service]``.

Exits 0 when the gRPC health service answers SERVING (or the URL answers 200), 1 otherwise. Without
``service`` it asks for the overall status "" (liveness: for a process supervisor); with a service name,
such as ``trading.gateway.v1.ExchangeGateway``, for that service's readiness (for a load balancer).
With ``TRADING_TLS_DIR`` set it speaks TLS, trusting that folder's ``ca.crt`` (and presenting nothing).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def tls_ca(env: Mapping[str, str]) -> bytes | None:
    """The CA to verify the services with when ``TRADING_TLS_DIR`` is set, else None (plaintext)."""
    directory = env.get("TRADING_TLS_DIR", "")
    return (Path(directory) / "ca.crt").read_bytes() if directory else None


def probe(target: str, timeout: float = 2.0, service: str = "", ca: bytes | None = None) -> bool:
    """Whether ``target`` is healthy (``service``: that service's status instead of the overall one).

    With ``ca`` the probe speaks TLS and verifies the server with that CA.
    """
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 - operator-given URL
                return bool(response.status == 200)
        except OSError:
            return False
    if ca is not None:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca))
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print("usage: python -m shared.healthcheck <host:port | http://url> [service]", file=sys.stderr)
        sys.exit(2)
    service = sys.argv[2] if len(sys.argv) == 3 else ""
    sys.exit(0 if probe(sys.argv[1], service=service, ca=tls_ca(os.environ)) else 1)
