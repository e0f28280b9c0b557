"""An account that pays its exchange fees in BNB: every order settles, the user pays the platform's fee
in the asset received, the exchange's BNB is the house's cost, and the books balance per asset.

Per asset, (users' total + house total) - deposits moves exactly as the exchange account does: the
ledger is double entry, and nothing is stuck in "locked".
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trading.order.v1 import order_pb2
from trading.user.v1 import user_service_pb2

from .conftest import ADMIN, Stack

D = Decimal
pb = order_pb2
BUY, SELL = pb.ORDER_SIDE_BUY, pb.ORDER_SIDE_SELL
FEE = D("0.001")  # the platform's default schedule, maker and taker


async def exchange_balances(stack: Stack) -> dict[str, Decimal]:
    async with stack.http.get(f"{stack.sim.base_url}/sim/v1/balances") as response:
        data: dict[str, Any] = await response.json()
    return {asset: D(b["free"]) + D(b["locked"]) for asset, b in data.items()}


async def ledger_totals(stack: Stack) -> dict[str, tuple[Decimal, Decimal, dict[str, Decimal]]]:
    """(users' total, house total, house balance per account) per asset."""
    response = await stack.users.GetLedgerTotals(user_service_pb2.GetLedgerTotalsRequest(), metadata=ADMIN)
    return {
        t.asset: (D(t.users_total), D(t.house_total), {h.account: D(h.balance) for h in t.house_balances})
        for t in response.totals
    }


async def house_entries(stack: Stack) -> list[Any]:
    entries: list[Any] = []
    token = ""
    while True:
        page = await stack.users.ListHouseEntries(
            user_service_pb2.ListHouseEntriesRequest(page_size=1000, page_token=token), metadata=ADMIN
        )
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


async def test_with_bnb_commissions_market_and_limit_orders_on_both_sides_settle_and_the_books_balance(
    stack: Stack,
) -> None:
    await stack.sim_post("commission", {"asset": "BNB"})
    deposits = {"USDT": D("10000"), "BTC": D("1")}
    exchange_before = await exchange_balances(stack)
    trader = await stack.trader({asset: str(amount) for asset, amount in deposits.items()})

    placed = [
        await trader.place(side=BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01"),
        await trader.place(side=SELL, type=pb.ORDER_TYPE_MARKET, quantity="0.02"),
        await trader.place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="49000.00"),
        await trader.place(side=SELL, type=pb.ORDER_TYPE_LIMIT, quantity="0.03", price="51000.00"),
    ]
    await stack.price("48990.00")
    await stack.price("51010.00")
    filled = [await trader.wait(order.order_id) for order in placed]
    await stack.settled()

    for order in filled:
        assert order.status == pb.ORDER_STATUS_FILLED, order
        received = D(order.filled_quantity) if order.side == BUY else D(order.filled_quote_quantity)
        assert order.commission_asset == ("BTC" if order.side == BUY else "USDT")
        assert D(order.commission) == (received * FEE).quantize(D("0.00000001")), "the platform's fee, not BNB"
        for fill in await trader.fills(order.order_id):
            assert fill.commission_asset == order.commission_asset

    balances = await stack.balances(trader.user_id)
    assert all(locked == 0 for _, locked in balances.values()), balances
    assert "BNB" not in balances, "the exchange's BNB fee never touches the user"
    bought = sum((D(o.filled_quantity) for o in filled if o.side == BUY), D(0))
    sold = sum((D(o.filled_quantity) for o in filled if o.side == SELL), D(0))
    btc_fee = sum((D(o.commission) for o in filled if o.side == BUY), D(0))
    usdt_fee = sum((D(o.commission) for o in filled if o.side == SELL), D(0))
    spent = sum((D(o.filled_quote_quantity) for o in filled if o.side == BUY), D(0))
    got = sum((D(o.filled_quote_quantity) for o in filled if o.side == SELL), D(0))
    assert balances["BTC"][0] == deposits["BTC"] + bought - sold - btc_fee
    assert balances["USDT"][0] == deposits["USDT"] - spent + got - usdt_fee

    exchange_after = await exchange_balances(stack)
    bnb_paid = exchange_before["BNB"] - exchange_after["BNB"]
    assert bnb_paid > 0, "the simulator charged the fees in BNB"
    totals = await ledger_totals(stack)
    assert totals["BNB"][2] == {"exchange_fees": -bnb_paid}, "the exchange's BNB fee is the house's cost"
    assert totals["BTC"][2]["fee_income"] == btc_fee and totals["USDT"][2]["fee_income"] == usdt_fee
    for asset in ("USDT", "BTC", "BNB"):
        users_total, house_total, _ = totals[asset]
        ledger_change = users_total + house_total - deposits.get(asset, D(0))
        assert ledger_change == exchange_after[asset] - exchange_before[asset], f"{asset} does not reconcile"

    # Every house balance is the sum of its entries, each traceable to an order and a trade.
    entries = await house_entries(stack)
    sums: dict[tuple[str, str], Decimal] = {}
    for entry in entries:
        sums[(entry.account, entry.asset)] = sums.get((entry.account, entry.asset), D(0)) + D(entry.amount)
        assert entry.order_id in {o.order_id for o in filled} and entry.reference.startswith("BTCUSDT:")
    for asset, (_, _, accounts) in totals.items():
        for account, balance in accounts.items():
            assert sums[(account, asset)] == balance
    # And every user balance is the sum of the user's entries.
    ledger = await stack.ledger(trader.user_id)
    for asset, (available, locked) in balances.items():
        assert sum((D(e.available_delta) for e in ledger if e.asset == asset), D(0)) == available
        assert sum((D(e.locked_delta) for e in ledger if e.asset == asset), D(0)) == locked
