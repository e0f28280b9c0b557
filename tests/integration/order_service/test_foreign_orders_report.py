"""What the platform did not place, and what the exchange contradicts, shows in the reconciliation report.

Orders placed on the exchange account directly (a person on the web site, another program) are
foreign: they appear in the report and their fills change no user's balance. A trade id the
exchange reuses with other content is a clash: the report shows it, and the trade is never settled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from yarl import URL

from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from trading.order.v1 import order_pb2, order_service_pb2
from trading.user.v1 import user_service_pb2

from .conftest import ADMIN, Stack

D = Decimal
pb = order_pb2


async def place_directly(stack: Stack, **params: str) -> dict[str, Any]:
    """Place an order on the exchange account without the platform, signed with the account's key."""
    query = urlencode({**params, "timestamp": str(int(time.time() * 1000))}, quote_via=quote, safe="-_.~")
    signature = hmac.new(SIM_DEV_API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    url = URL(f"{stack.sim.base_url}/api/v3/order?{query}&signature={signature}", encoded=True)
    async with stack.http.post(url, headers={"X-MBX-APIKEY": SIM_DEV_API_KEY}) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        assert response.status == 200, body
        return body


async def report(stack: Stack) -> order_service_pb2.ReconciliationReport:
    response = await stack.order_stub.GetReconciliationReport(
        order_service_pb2.GetReconciliationReportRequest(), metadata=ADMIN
    )
    return response.report


async def ledger_totals(stack: Stack) -> dict[str, tuple[str, str]]:
    response = await stack.users.GetLedgerTotals(user_service_pb2.GetLedgerTotalsRequest(), metadata=ADMIN)
    return {t.asset: (t.users_total, t.house_total) for t in response.totals}


async def test_orders_placed_directly_on_the_account_are_in_the_report_and_their_fills_touch_no_user(
    stack: Stack,
) -> None:
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})
    mine = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="45000.00")
    balances = await stack.balances(trader.user_id)
    totals = await ledger_totals(stack)

    resting = await place_directly(
        stack, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.02", price="49500.00",
        newClientOrderId="web_person_1",
    )  # fmt: skip
    await place_directly(stack, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.01")
    await stack.gateway_running.internals.orders.reconcile("test")
    got = await report(stack)
    (foreign,) = [o for o in got.foreign_orders if o.client_order_id == "web_person_1"]
    assert (foreign.symbol, foreign.side, foreign.type, foreign.exchange_order_id) == (
        "BTCUSDT",
        "BUY",
        "LIMIT",
        resting["orderId"],
    )
    assert (D(foreign.price), D(foreign.quantity), foreign.status, foreign.open) == (
        D("49500"),
        D("0.02"),
        "NEW",
        True,
    )
    assert mine.order_id not in {o.client_order_id for o in got.foreign_orders}, "the platform's own order"

    await stack.price("49400.00")  # the foreign order fills
    await stack.gateway_running.internals.orders.reconcile("test")
    await stack.settled()
    (ended,) = [o for o in (await report(stack)).foreign_orders if o.client_order_id == "web_person_1"]
    assert (ended.status, D(ended.executed_quantity), ended.open) == ("FILLED", D("0.02"), False)
    assert await stack.balances(trader.user_id) == balances, "a foreign fill never touches a user's balance"
    assert await ledger_totals(stack) == totals
    assert (await trader.get(mine.order_id)).status == pb.ORDER_STATUS_PENDING


async def test_a_trade_id_the_exchange_reuses_with_other_content_is_an_anomaly_in_the_report_never_settled(
    stack: Stack,
) -> None:
    trader = await stack.trader({"USDT": "10000"})
    first = await trader.wait(
        (await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01")).order_id
    )
    (fill,) = await trader.fills(first.order_id)
    trade_id = int(fill.fill_id.split(":")[1])
    await stack.settled()
    balances = await stack.balances(trader.user_id)

    await stack.sim_post("reset", {"next_trade_id": trade_id})  # an exchange that reuses its trade ids
    second = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.02")
    clash: list[order_service_pb2.ExchangeAnomaly] = []
    for _ in range(100):
        clash = [a for a in (await report(stack)).anomalies if a.kind == "TRADE_KEY_CLASH"]
        if clash:
            break
        await asyncio.sleep(0.05)
    (anomaly,) = clash
    assert (anomaly.symbol, anomaly.trade_id, anomaly.client_order_id) == ("BTCUSDT", trade_id, second.order_id)
    assert D((await trader.get(second.order_id)).filled_quantity) == 0, "the clashing trade is held, not applied"
    await stack.settled()
    after = await stack.balances(trader.user_id)
    assert after["BTC"] == balances["BTC"], "nothing of the doubtful trade reached the ledger"
