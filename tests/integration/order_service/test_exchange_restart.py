"""The exchange restarts under a running stack (a restarted simulator, a testnet reset): no trade is lost.

The restarted simulator has forgotten every order and trade. Orders placed after the restart fill
and settle (their trade ids are new: the simulator's ids start from the clock, so the journal's old
trade keys cannot swallow them), and the order the journal still had open is reported as forgotten
by the exchange and ended EXPIRED with its funds released, never left PENDING with money locked.
"""

from __future__ import annotations

from decimal import Decimal

from services.exchange_simulator.app import SimConfig, start_simulator
from trading.order.v1 import order_pb2, order_service_pb2

from .conftest import ADMIN, Stack

D = Decimal
pb = order_pb2


async def test_after_the_simulator_restarts_new_orders_fill_and_settle_and_forgotten_ones_are_released(
    stack: Stack,
) -> None:
    trader = await stack.trader({"USDT": "10000"})
    before = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01")
    assert (await trader.wait(before.order_id)).status == pb.ORDER_STATUS_FILLED
    resting = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="45000.00")
    await stack.settled()

    port = stack.sim.port
    await stack.sim.stop()
    stack.sim = await start_simulator(SimConfig(port=port, log_level="WARNING"))

    after = [await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01") for _ in range(4)]
    filled = [await trader.wait(order.order_id, timeout=30) for order in after]
    assert all(order.status == pb.ORDER_STATUS_FILLED for order in filled), filled
    forgotten = await trader.wait(resting.order_id, timeout=90)
    assert forgotten.status == pb.ORDER_STATUS_EXPIRED
    assert "EXCHANGE_FORGOT" in forgotten.expire_reason and forgotten.reject_reason == ""
    await stack.settled()

    balances = await stack.balances(trader.user_id)
    spent = sum((D(o.filled_quote_quantity) for o in [await trader.get(before.order_id), *filled]), D(0))
    assert balances["USDT"] == (D("10000") - spent, D("0")), "every trade settled, nothing left locked"
    fills = [f for o in filled for f in await trader.fills(o.order_id)]
    assert len({f.fill_id for f in fills}) == len(fills) == 4
    report = await stack.order_stub.GetReconciliationReport(
        order_service_pb2.GetReconciliationReportRequest(), metadata=ADMIN
    )
    kinds = {(a.kind, a.client_order_id) for a in report.report.anomalies}
    assert ("EXCHANGE_FORGOT_ORDER", resting.order_id) in kinds
