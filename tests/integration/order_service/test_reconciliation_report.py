"""The client-money reconciliation report over the real stack (admin token).

Per asset the report's exchange total is the simulator's account, its users' and house totals are
the ledger's, and after any mix of trades its difference is exactly what the books never saw: the
exchange account's own funds before the first deposit, less deposits, plus withdrawals. A trade
the ledger has not booked (a parked settlement) is in flight, not a difference.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from decimal import Decimal
from typing import Any

import grpc
import pytest

from trading.order.v1 import order_pb2, order_service_pb2
from trading.user.v1 import user_service_pb2

from .conftest import ADMIN, Stack
from .test_bnb_commissions import exchange_balances

D = Decimal
pb = order_pb2
BUY, SELL = pb.ORDER_SIDE_BUY, pb.ORDER_SIDE_SELL
SHORTFALL, EXCESS = order_service_pb2.RECONCILIATION_STATUS_SHORTFALL, order_service_pb2.RECONCILIATION_STATUS_EXCESS


async def report(stack: Stack) -> order_service_pb2.ReconciliationReport:
    response = await stack.order_stub.GetReconciliationReport(
        order_service_pb2.GetReconciliationReportRequest(), metadata=ADMIN
    )
    return response.report


async def test_after_a_burst_of_mixed_orders_with_bnb_fees_the_report_matches_the_exchange_and_the_ledger(
    stack: Stack,
) -> None:
    await stack.sim_post("commission", {"asset": "BNB"})
    exchange_before = await exchange_balances(stack)
    deposits = {"USDT": D("30000"), "BTC": D("3")}
    traders = [await stack.trader({"USDT": "10000", "BTC": "1"}, name="rec") for _ in range(3)]
    await stack.users.Withdraw(
        user_service_pb2.WithdrawRequest(user_id=traders[0].user_id, asset="USDT", amount="100", request_id="w-rec-1"),
        metadata=ADMIN,
    )
    withdrawals = {"USDT": D("100")}

    # One settlement will be refused for good and parked: its trade is in flight, not a difference.
    parked_order = await traders[2].place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="49500.00")
    with sqlite3.connect(stack.tmp / "users.db") as conn:
        conn.execute("DELETE FROM reservations WHERE order_id = ?", (parked_order.order_id,))

    placed: list[tuple[Any, pb.Order]] = []
    for i, trader in enumerate(traders):
        placed.append((trader, await trader.place(side=BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01")))
        placed.append((trader, await trader.place(side=SELL, type=pb.ORDER_TYPE_MARKET, quantity=f"0.0{i + 1}")))
        placed.append(
            (trader, await trader.place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.02", price="49000.00"))
        )
    resting = await traders[1].place(side=SELL, type=pb.ORDER_TYPE_LIMIT, quantity="0.05", price="60000.00")
    await stack.price("48990.00")
    for trader, order in placed:
        assert (await trader.wait(order.order_id)).status == pb.ORDER_STATUS_FILLED
    await traders[2].wait(parked_order.order_id)
    for _ in range(200):
        if (await report(stack)).parked_effects:
            break
        await asyncio.sleep(0.05)
    await stack.settled()

    got = await report(stack)
    exchange_after = await exchange_balances(stack)
    totals = await stack.users.GetLedgerTotals(user_service_pb2.GetLedgerTotalsRequest(), metadata=ADMIN)
    ledger = {t.asset: (D(t.users_total), D(t.house_total)) for t in totals.totals}
    lines = {line.asset: line for line in got.assets}
    (parked,) = got.parked_effects
    assert parked.order_id == parked_order.order_id
    assert D(lines["BTC"].in_flight) == D("0.01") and D(lines["USDT"].in_flight) == D("-495")
    assert D(lines["BNB"].in_flight) < 0, "the exchange already charged its BNB fee for the parked trade"
    assert D(lines["USDT"].exchange_locked) == D("0") and D(lines["BTC"].exchange_locked) == D("0.05"), resting
    for asset in ("USDT", "BTC", "BNB"):
        line = lines[asset]
        assert D(line.exchange_total) == exchange_after[asset]
        assert (D(line.users_total), D(line.house_total)) == ledger[asset]
        expected = exchange_before[asset] - deposits.get(asset, D(0)) + withdrawals.get(asset, D(0))
        assert D(line.difference) == expected, f"{asset}: only the account's own funds, deposits and withdrawals"
        assert line.status == EXCESS
    assert got.status == EXCESS
    assert list(got.foreign_orders) == []


async def test_a_deposit_the_exchange_does_not_hold_is_a_shortfall_logged_as_a_security_event(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = await exchange_balances(stack)
    too_much = exchange["USDT"] + D("1000")
    trader = await stack.trader({"USDT": str(too_much)}, name="short")
    with caplog.at_level(logging.ERROR, logger="security"):
        got = await report(stack)
    (usdt,) = [line for line in got.assets if line.asset == "USDT"]
    assert usdt.status == SHORTFALL and got.status == SHORTFALL
    assert D(usdt.difference) == D("-1000")
    assert D(usdt.users_total) == too_much
    records = [r for r in caplog.records if r.name == "security" and "shortfall" in r.getMessage()]
    assert records and records[0].levelno == logging.ERROR
    assert getattr(records[0], "asset", None) == "USDT"
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await trader.stub.GetReconciliationReport(
            order_service_pb2.GetReconciliationReportRequest(), metadata=trader.auth
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
