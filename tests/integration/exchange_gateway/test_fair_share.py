"""One user's burst does not hold up another user's order: new orders go round-robin by fair_share_key.

The burst test waits for one ORDERS window roll-over (up to about 10 s).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shared.errors import InvalidArgument, ResourceExhausted
from shared.grpc_errors import from_rpc_error
from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN, SERVICE, Sim, StartGateway, early_in_window, eventually, limit_request, pb

LIMIT = 5  # new orders per 10 s on the simulator
TIMEOUT = 12.0  # long enough for the next window, too short for the one after it


async def submit(gateway, cid: str, key: str) -> gateway_pb2.ExchangeOrder | grpc.aio.AioRpcError:
    request = limit_request(cid)
    request.fair_share_key = key
    try:
        reply = await gateway.stub.SubmitOrder(request, metadata=SERVICE, timeout=TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return exc
    return reply.order


async def test_a_burst_of_one_user_does_not_hold_up_another_users_single_order(start_gateway: StartGateway, sim: Sim):
    await sim.post("limits", {"orders_per_10s": LIMIT})
    gateway = await start_gateway()  # reads the limit from exchangeInfo
    await early_in_window(7.0)  # everything up to bob's order happens in this window

    alice = [asyncio.create_task(submit(gateway, f"alice-{i:02d}", "alice")) for i in range(12)]

    async def alice_settled() -> bool:
        status = await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
        # Five went at once, five wait for the next window, two could not make their deadline.
        return status.queued_orders == LIMIT and sum(task.done() for task in alice) == 12 - LIMIT

    await eventually(alice_settled, timeout=5.0, what="alice's burst to fill this window and queue for the next")
    bob = await submit(gateway, "bob-00", "bob")
    alice_results = await asyncio.gather(*alice)

    assert isinstance(bob, gateway_pb2.ExchangeOrder), bob
    assert bob.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    accepted = [r for r in alice_results if isinstance(r, gateway_pb2.ExchangeOrder)]
    refused = [r for r in alice_results if isinstance(r, grpc.aio.AioRpcError)]
    # Bob's order took one of the next window's five places: alice's last queued one could then no
    # longer make its deadline and failed as the two beyond the next window had.
    assert len(accepted) == 2 * LIMIT - 1 and len(refused) == 3
    for exc in refused:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        error = from_rpc_error(exc)
        assert isinstance(error, ResourceExhausted) and error.retry_after and error.retry_after > 0

    placed = await sim.orders()
    window_of = {o["clientOrderId"]: o["time"] // 10_000 for o in placed}
    assert len(placed) == 2 * LIMIT
    first_window = min(window_of.values())
    assert sum(w == first_window for w in window_of.values()) == LIMIT  # alice's first five
    assert window_of["bob-00"] == first_window + 1  # the first window after bob's order came

    stats = await sim.stats()
    assert stats["http_429"] == 0 and stats["http_418"] == 0
    assert all(count <= LIMIT for count in stats["orders_per_10s_window"].values())
    status = await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    assert status.http_429_count == 0 and status.queue_depth == 0


@pytest.mark.parametrize("key", ["k" * 65, "user 1", "user/1"])
async def test_a_malformed_fair_share_key_is_invalid_argument_naming_the_field(start_gateway: StartGateway, sim, key):
    gateway = await start_gateway()
    result = await submit(gateway, "bad-key", key)
    assert isinstance(result, grpc.aio.AioRpcError)
    assert result.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(result)
    assert isinstance(error, InvalidArgument) and error.field == "fair_share_key"
    assert await sim.orders() == []


async def test_a_resubmission_under_another_key_returns_the_same_order(start_gateway: StartGateway, sim: Sim):
    gateway = await start_gateway()
    first = await submit(gateway, "same-id", "alice")
    again = await submit(gateway, "same-id", "bob")
    assert isinstance(first, gateway_pb2.ExchangeOrder) and isinstance(again, gateway_pb2.ExchangeOrder)
    assert again.exchange_order_id == first.exchange_order_id
    assert len(await sim.orders()) == 1
