"""Answers that leave the outcome unknown (5xx, -1007) are resolved by query, never by sending again."""

from __future__ import annotations

import pytest

from trading.gateway.v1 import gateway_pb2

from .conftest import Gateway, Sim, StartGateway, eventually


@pytest.mark.parametrize(
    ("fault", "stream_down"),
    [("http_503", True), ("http_503", False), ("error_1007", True)],
    ids=["503-resolved-by-query", "503-resolved-by-stream", "1007-resolved-by-query"],
)
async def test_an_order_accepted_but_answered_with_an_error_ends_as_one_open_order(
    gateway: Gateway, sim: Sim, fault, stream_down
):
    if stream_down:  # the user data stream cannot tell: only the query by origClientOrderId can
        await sim.post("faults", {"action": "drop_ws", "drop_events_ms": 3000})
    await sim.post("faults", {"action": fault, "endpoint": "order.new", "when": "after", "count": 1})
    order = await gateway.submit("unk-1")
    if stream_down:
        assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN
    else:  # the stream's NEW may beat the 503 answer
        assert order.status in (gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN, gateway_pb2.EXCHANGE_ORDER_STATUS_NEW)

    async def resolved() -> bool:
        return (await gateway.get("unk-1")).status != gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN

    await eventually(resolved, timeout=10, what="the unknown outcome to resolve")
    order = await gateway.get("unk-1")
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    assert order.exchange_order_id > 0

    at_exchange = await sim.orders(clientOrderId="unk-1")
    assert len(at_exchange) == 1 and at_exchange[0]["status"] == "NEW"
    stats = await sim.stats()
    # Sent once: a second POST with the same id would have been refused as a duplicate (or placed twice).
    assert stats["orders_accepted"] == 1 and stats["orders_rejected"] == 0
    assert gateway.running.internals.orders.stats["unknown_outcome"] == 1

    (execution,) = await gateway.executions(0, 1)
    assert execution.execution_type == gateway_pb2.EXECUTION_TYPE_NEW
    assert execution.client_order_id == "unk-1"
    assert len(await gateway.all_executions(settle=0.5)) == 1  # no REJECTED, no second NEW

    # Still a normal order: it can be cancelled.
    assert (await gateway.cancel("unk-1")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED


async def test_an_order_that_never_reached_the_book_is_rejected_once_its_recv_window_has_passed(
    start_gateway: StartGateway, sim: Sim
):
    gateway = await start_gateway(recv_window_ms=1000)
    await sim.post("faults", {"action": "http_503", "endpoint": "order.new", "when": "before", "count": 1})
    order = await gateway.submit("unk-never")
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN

    async def rejected() -> bool:
        return (await gateway.get("unk-never")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_REJECTED

    await eventually(rejected, timeout=10, what="proof that the order was never placed")
    order = await gateway.get("unk-never")
    assert order.reject_reason.startswith("NOT_PLACED")
    assert await sim.orders(clientOrderId="unk-never") == []
    (execution,) = await gateway.executions(0, 1)
    assert execution.execution_type == gateway_pb2.EXECUTION_TYPE_REJECTED
    assert execution.reject_reason.startswith("NOT_PLACED")
    assert (await sim.stats())["orders_accepted"] == 0


async def test_a_slow_answer_past_the_callers_deadline_still_journals_the_order(gateway: Gateway, sim: Sim):
    await sim.post("faults", {"action": "delay", "endpoint": "order.new", "when": "after", "delay_ms": 1500})
    with pytest.raises(Exception) as caught:
        await gateway.submit("unk-slow", timeout=0.7)
    assert "DEADLINE_EXCEEDED" in str(caught.value)

    async def journaled() -> bool:
        return (await gateway.get("unk-slow")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW

    await eventually(journaled, timeout=5, what="the order to be journaled after the caller left")
    # The caller retries with the same id and gets the order, not a second one.
    again = await gateway.submit("unk-slow")
    assert again.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    assert len(await sim.orders(clientOrderId="unk-slow")) == 1
