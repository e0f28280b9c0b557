"""A clock skewed beyond recvWindow is corrected after one -1021, and the request then succeeds."""

from __future__ import annotations

import pytest

from trading.gateway.v1 import gateway_pb2

from .conftest import Gateway, Sim


@pytest.mark.parametrize("skew_ms", [-10_000, +3_000], ids=["behind-beyond-recvWindow", "ahead-of-server"])
async def test_a_skewed_clock_is_resynced_after_one_invalid_timestamp(gateway: Gateway, sim: Sim, skew_ms):
    clock, rest = gateway.running.internals.clock, gateway.running.internals.rest
    clock.offset_ms += skew_ms
    sent = gateway.record_requests()
    order = await gateway.submit("skew-1")
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW, order.reject_reason
    assert rest.stats["-1021"] == 1
    assert [path for _, path, _ in sent if path == "/api/v3/time"] == ["/api/v3/time"]  # resynced once
    assert abs(clock.offset_ms) < 500
    # Placed once: the -1021 refusal happened before the matching engine.
    assert len(await sim.orders(clientOrderId="skew-1")) == 1
    assert (await sim.stats())["orders_accepted"] == 1

    # Corrected for good: the next signed requests need no resync.
    await gateway.submit("skew-2")
    await gateway.get("skew-2", refresh=True)
    assert rest.stats["-1021"] == 1
