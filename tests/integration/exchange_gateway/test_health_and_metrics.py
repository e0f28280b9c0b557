"""Health that tells the truth, against the simulator: a 429 and a 418 from the exchange turn the gateway's
own health status NOT_SERVING until the pause or ban is over, show in its /metrics, and leave the liveness
status ("") SERVING throughout."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.exchange_gateway.bootstrap import SERVICE_NAME
from tests.metrics import scrape

from .conftest import Gateway, Sim, StartGateway, early_in_window

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BAN_SECONDS = 12  # longer than any 429 pause on the ORDERS 10 s window, so the gateway meets the ban


class HealthWatch:
    """Every status the gateway's Health.Watch stream reports for its own service name, with its time."""

    def __init__(self, channel: grpc.aio.Channel, service: str):
        self.seen: list[tuple[float, int]] = []
        self._call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for reply in self._call:
            self.seen.append((time.monotonic(), reply.status))

    def statuses(self) -> list[int]:
        """The statuses in order, repeats collapsed."""
        collapsed: list[int] = []
        for _, status in self.seen:
            if not collapsed or collapsed[-1] != status:
                collapsed.append(status)
        return collapsed

    async def until(self, statuses: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.statuses()[-len(statuses) :] != statuses:
            assert time.monotonic() < deadline, f"health went {self.statuses()}, expected to end with {statuses}"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._call.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._task


async def metrics(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    server = gateway.running.telemetry.metrics_server
    assert server is not None
    async with aiohttp.ClientSession() as session:
        return await scrape(session, server.url)


def requests(samples: dict, code: str, endpoint: str = "POST /api/v3/order") -> float:
    return samples.get(("trading_exchange_requests_total", (("code", code), ("endpoint", endpoint))), 0.0)


async def liveness(gateway: Gateway) -> int:
    reply = await health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest(service=""))
    return reply.status


async def test_a_429_and_a_418_turn_the_gateway_not_serving_until_they_are_over(start_gateway: StartGateway, sim: Sim):
    gateway = await start_gateway(metrics_addr="127.0.0.1:0")
    watch = HealthWatch(gateway.channel, SERVICE_NAME)
    try:
        await watch.until([SERVING], timeout=5)
        before = await metrics(gateway)
        assert before[("trading_ready", ())] == 1
        assert requests(before, "429") == 0

        # The exchange allows one new order per 10 s (the gateway still believes exchangeInfo's 50), and
        # bans for BAN_SECONDS whoever sends an order during the back-off that a 429 asks for.
        await sim.post("limits", {"orders_per_10s": 1, "ban_base_seconds": BAN_SECONDS})
        await early_in_window(needed_s=4)
        first = await gateway.submit("health-1")
        assert first.exchange_order_id
        await gateway.submit("health-2")  # the exchange answers 429: the gateway stops sending
        await watch.until([SERVING, NOT_SERVING], timeout=5)
        assert await liveness(gateway) == SERVING  # liveness is not readiness

        during = await metrics(gateway)
        assert requests(during, "429") == 1
        assert requests(during, "200") == 1
        assert during[("trading_exchange_rate_limited_total", (("status", "429"),))] == 1
        assert during[("trading_exchange_backoff_seconds", ())] > 0
        assert during[("trading_ready", ())] == 0
        assert during[("trading_readiness_check", (("check", "exchange_not_rate_limited"),))] == 0

        # Someone else on the same account sends an order during the back-off: the exchange bans the IP.
        status, _ = await sim.signed(
            "POST",
            "/api/v3/order",
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "40000.00",
            },
        )
        assert status == 418

        # The gateway's pause ends with the ORDERS window; its next request, whichever it is, meets the ban.
        deadline = time.monotonic() + 15
        attempt = 3
        while sum(v for (name, labels), v in (await metrics(gateway)).items() if ("code", "418") in labels) == 0:
            assert time.monotonic() < deadline, "the gateway never met the ban"
            with contextlib.suppress(grpc.aio.AioRpcError):
                await gateway.submit(f"health-{attempt}", timeout=1.0)
            attempt += 1
            await asyncio.sleep(0.5)
        await watch.until([NOT_SERVING], timeout=3)
        banned = await metrics(gateway)
        assert banned[("trading_exchange_rate_limited_total", (("status", "418"),))] == 1
        assert banned[("trading_exchange_backoff_seconds", ())] > 0
        assert await liveness(gateway) == SERVING

        # The ban ends: ready again, and nothing more was sent while it lasted.
        await watch.until([NOT_SERVING, SERVING], timeout=BAN_SECONDS + 3)
        after = await metrics(gateway)
        assert after[("trading_exchange_rate_limited_total", (("status", "418"),))] == 1
        assert requests(after, "429") == 1
        assert after[("trading_ready", ())] == 1
        assert after[("trading_exchange_backoff_seconds", ())] == 0
        assert watch.statuses()[:2] == [SERVING, NOT_SERVING]
    finally:
        await watch.close()
