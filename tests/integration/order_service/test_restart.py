"""The order service stopped between placement and fill: the order completes after restart, exactly once."""

from __future__ import annotations

from decimal import Decimal

from trading.order.v1 import order_pb2
from trading.user.v1 import user_pb2

from .conftest import Stack

D = Decimal
pb = order_pb2


async def test_fills_that_happen_while_the_order_service_is_down_are_applied_once(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    order = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.02", price="49000.00")
    await stack.settled()

    async def fill_while_down() -> None:
        await stack.price("49000.00", volume="0.01")
        await stack.price("48990.00")

    await stack.restart_orders(between=fill_while_down)
    trader.stub = stack.order_stub
    filled = await trader.wait(order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    assert len(await trader.fills(order.order_id)) == 2
    await stack.settled()
    balances = await stack.balances(trader.user_id)
    assert balances["USDT"] == (D("10000") - D("980"), D("0"))
    assert balances["BTC"] == (D("0.02") - D("0.00002"), D("0"))
    entries = await stack.ledger(trader.user_id)
    kinds = [e.kind for e in entries]
    assert kinds.count(user_pb2.LEDGER_ENTRY_KIND_TRADE_DEBIT) == 2
    assert kinds.count(user_pb2.LEDGER_ENTRY_KIND_TRADE_CREDIT) == 2
    assert kinds.count(user_pb2.LEDGER_ENTRY_KIND_FEE) == 2

    # A second restart replays nothing.
    await stack.restart_orders()
    trader.stub = stack.order_stub
    assert (await trader.get(order.order_id)).status == pb.ORDER_STATUS_FILLED
    await stack.settled()
    assert len(await stack.ledger(trader.user_id)) == len(entries)
