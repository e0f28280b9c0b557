"""Cancels overtake new orders that wait for rate-limit capacity."""

from __future__ import annotations

import asyncio

from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN, SERVICE, Sim, StartGateway, early_in_window, limit_request, pb


def submit_in_background(gateway, cid: str) -> asyncio.Task:
    async def call():
        return await gateway.stub.SubmitOrder(limit_request(cid), metadata=SERVICE, timeout=30)

    return asyncio.create_task(call())


async def test_a_cancel_goes_out_while_new_orders_wait_for_the_next_window(start_gateway: StartGateway, sim: Sim):
    await sim.post("limits", {"orders_per_10s": 3})
    gateway = await start_gateway()
    await early_in_window(3.0)  # the window must not roll over during the test
    for i in range(3):  # the ORDERS window is now full
        await gateway.submit(f"pri-{i}")
    waiting = [submit_in_background(gateway, f"pri-wait-{i}") for i in range(3)]
    await asyncio.sleep(0.2)
    status = await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    assert status.queued_orders == 3

    canceled = await gateway.cancel("pri-0", timeout=2)
    assert canceled.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED
    assert not any(task.done() for task in waiting)  # the cancel overtook all of them
    status = await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    assert status.queued_orders == 3 and status.queued_cancels == 0

    for task in waiting:  # the callers give up: nothing was sent for them
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await asyncio.sleep(0.1)
    status = await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    assert status.queued_orders == 0
    assert (await sim.stats())["http_429"] == 0
