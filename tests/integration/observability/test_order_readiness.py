"""The order service's own health status follows whether it can reach the services it needs: NOT_SERVING
while the user service is down, SERVING again once it is back; its overall status ("") stays SERVING."""

from __future__ import annotations

import asyncio
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.order_service.bootstrap import SERVICE_NAME
from services.user_service.bootstrap import start as start_users

from .conftest import Observed

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(observed: Observed, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(observed.stack.order_channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


async def _until(observed: Observed, status: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while await _status(observed, SERVICE_NAME) != status:
        assert time.monotonic() < deadline, f"the order service never reported {status}"
        await asyncio.sleep(0.1)


async def test_the_order_service_is_not_ready_while_the_user_service_is_down_and_ready_when_it_is_back(
    observed: Observed,
):
    stack = observed.stack
    await _until(observed, SERVING)
    await stack.users_running.stop(0.5)

    await _until(observed, NOT_SERVING)
    assert await _status(observed, "") == SERVING  # alive: nothing to restart
    samples = await observed.scrape("order_service")
    assert samples[("trading_ready", ())] == 0
    assert samples[("trading_readiness_check", (("check", "user_service"),))] == 0
    assert samples[("trading_readiness_check", (("check", "exchange_gateway"),))] == 1

    stack.users_running = await start_users(observed.user_config)
    await _until(observed, SERVING)
    samples = await observed.scrape("order_service")
    assert samples[("trading_ready", ())] == 1
    assert samples[("trading_readiness_check", (("check", "user_service"),))] == 1
