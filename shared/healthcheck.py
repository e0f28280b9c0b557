"""Container health probe: ``python -m shared.healthcheck <host:port | http://url>``.

Exits 0 when the gRPC health service answers SERVING (or the URL answers 200), 1 otherwise.
"""

from __future__ import annotations

import sys
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe(target: str, timeout: float = 2.0) -> bool:
    """Whether ``target`` is healthy."""
    if target.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 - operator-given URL
                return bool(response.status == 200)
        except OSError:
            return False
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m shared.healthcheck <host:port | http://url>", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if probe(sys.argv[1]) else 1)
