"""No execution is lost or doubled: a dropped user data stream, and a gateway restart."""

from __future__ import annotations

import asyncio
from collections import Counter

from trading.gateway.v1 import gateway_pb2

from .conftest import Gateway, Sim, StartGateway, eventually

TRADE = gateway_pb2.EXECUTION_TYPE_TRADE


def sim_trade_ids(sim: Sim, cids: set[str]) -> set[int]:
    """Every trade the simulator made for these orders."""
    return {t.id for o in sim.exchange.all_orders() if o.client_order_id in cids for t in o.trades}


def check_journal(executions: list[gateway_pb2.Execution], after: int = 0) -> None:
    """Sequences after+1, after+2, ... with no gap, and every fact once."""
    assert [e.sequence for e in executions] == list(range(after + 1, after + 1 + len(executions)))
    keys = [
        ("T", e.symbol, e.trade_id) if e.execution_type == TRADE else ("X", e.client_order_id, e.execution_type)
        for e in executions
    ]
    duplicates = [k for k, n in Counter(keys).items() if n > 1]
    assert duplicates == []


async def test_a_fill_while_the_stream_is_down_arrives_once_through_reconciliation(gateway: Gateway, sim: Sim):
    await gateway.submit("ws-1", quantity="0.01", price="49000.00")
    stream = gateway.running.internals.user_stream
    connects = stream.connects
    # The connection drops and stays refused for 1.5 s; the fill happens meanwhile and its event is lost.
    await sim.post("faults", {"action": "drop_ws", "drop_events_ms": 1500})
    await sim.price("BTCUSDT", "48999.00", volume="0.004")

    async def reconciled() -> bool:
        return (await gateway.get("ws-1")).executed_quantity == "0.00400000"

    await eventually(reconciled, timeout=15, what="the missed trade to be reconciled")
    assert stream.connects > connects
    assert gateway.running.internals.orders.stats["trades_fetched"] >= 1  # it came from myTrades, not the stream

    # The rest fills live, over the new connection.
    await sim.price("BTCUSDT", "48998.00")
    new, first, second = await gateway.executions(0, 3)
    assert new.execution_type == gateway_pb2.EXECUTION_TYPE_NEW
    assert (first.execution_type, first.last_quantity, first.order_status) == (
        TRADE,
        "0.00400000",
        gateway_pb2.EXCHANGE_ORDER_STATUS_PARTIALLY_FILLED,
    )
    assert (second.execution_type, second.cumulative_quantity, second.order_status) == (
        TRADE,
        "0.01000000",
        gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED,
    )
    assert {first.trade_id, second.trade_id} == sim_trade_ids(sim, {"ws-1"})

    # Reconciling again (as after any reconnect) adds nothing.
    await gateway.running.internals.orders.reconcile("test")
    executions = await gateway.all_executions(settle=0.5)
    check_journal(executions)
    assert len(executions) == 3


async def test_after_a_restart_the_stream_resumes_with_no_gap_and_no_duplicate(start_gateway: StartGateway, sim: Sim):
    first = await start_gateway()
    cids = {"rs-1", "rs-2", "rs-3", "rs-mkt"}
    await first.submit("rs-1", price="49000.00")
    await first.submit("rs-2", price="48900.00")
    await first.submit("rs-3", price="48800.00")
    await first.submit("rs-mkt", type=gateway_pb2.ORDER_TYPE_MARKET, price="")
    seen = await first.executions(0, 5)  # NEW x4 and the market order's trade
    check_journal(seen)
    resume_after = seen[-1].sequence
    await first.channel.close()
    await first.running.stop()

    # While the gateway is down, orders fill (fully and partly); nobody is listening.
    await sim.price("BTCUSDT", "48950.00")
    await sim.price("BTCUSDT", "48850.00", volume="0.004")

    second = await start_gateway()
    consumer = asyncio.create_task(second.executions(resume_after, 4, timeout=15))

    async def caught_up() -> bool:
        return (await second.get("rs-2")).executed_quantity == "0.00400000"

    await eventually(caught_up, timeout=15, what="reconciliation after the restart")
    # And live again: the rest of rs-2 and all of rs-3.
    await sim.price("BTCUSDT", "48700.00")
    resumed = await consumer
    check_journal(resumed, after=resume_after)

    everything = await second.all_executions(settle=0.5)
    check_journal(everything)
    assert everything[: len(seen)] == seen
    trades = [e.trade_id for e in everything if e.execution_type == TRADE]
    assert sorted(trades) == sorted(sim_trade_ids(sim, cids))
    for cid in ("rs-1", "rs-2", "rs-3"):
        assert (await second.get(cid)).status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED
