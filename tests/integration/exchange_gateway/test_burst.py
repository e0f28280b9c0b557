"""A burst of three times the ORDERS-per-10s limit: no 429, each full window used to at least 90%.

This test takes 10-20 s: it has to wait for two window roll-overs. It measures no time itself: the
simulator counts what each window received.
"""

from __future__ import annotations

import asyncio

import grpc

from shared.errors import ResourceExhausted
from shared.grpc_errors import from_rpc_error
from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN, SERVICE, Sim, StartGateway, early_in_window, limit_request, pb

LIMIT = 10


async def test_a_burst_of_three_times_the_orders_limit(start_gateway: StartGateway, sim: Sim):
    await sim.post("limits", {"orders_per_10s": LIMIT})
    gateway = await start_gateway()  # reads the limit from exchangeInfo
    await early_in_window(3.0)  # the first window must hold the first ten whatever the machine's load

    async def submit(cid: str, deadline: float) -> tuple[str, object]:
        try:
            reply = await gateway.stub.SubmitOrder(limit_request(cid), metadata=SERVICE, timeout=deadline)
            outcome: object = reply.order
        except grpc.aio.AioRpcError as exc:
            outcome = exc
        return cid, outcome

    burst = [asyncio.create_task(submit(f"burst-{i:02d}", 25.0)) for i in range(3 * LIMIT)]
    await asyncio.sleep(0.3)
    # These come after 20 waiting orders: they would need a fourth window, far beyond their 3 s.
    late = [asyncio.create_task(submit(f"late-{i}", 3.0)) for i in range(5)]
    late_results = await asyncio.gather(*late)
    results = await asyncio.gather(*burst)

    for cid, outcome in late_results:
        # Refused as soon as the wait is known to exceed the deadline: held to it, the call would end
        # DEADLINE_EXCEEDED instead.
        assert isinstance(outcome, grpc.aio.AioRpcError), cid
        assert outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        error = from_rpc_error(outcome)
        assert isinstance(error, ResourceExhausted) and error.retry_after and error.retry_after > 3.0

    for cid, outcome in results:
        assert isinstance(outcome, gateway_pb2.ExchangeOrder), f"{cid}: {outcome}"
        assert outcome.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW

    stats = await sim.stats()
    assert stats["http_429"] == 0 and stats["http_418"] == 0
    assert stats["orders_accepted"] == 3 * LIMIT
    per_window = [count for _, count in sorted((int(k), v) for k, v in stats["orders_per_10s_window"].items())]
    assert len(per_window) == 3 and sum(per_window) == 3 * LIMIT
    assert all(count <= LIMIT for count in per_window)
    assert all(count >= 0.9 * LIMIT for count in per_window), per_window

    status = await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    assert status.http_429_count == 0 and status.queue_depth == 0
