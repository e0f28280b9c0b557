"""Orders through the real stack: placement, fills from the simulator, exact balances, an explaining ledger."""

from __future__ import annotations

from decimal import Decimal

from trading.order.v1 import order_pb2
from trading.user.v1 import user_pb2

from .conftest import Stack

D = Decimal
BUY, SELL = order_pb2.ORDER_SIDE_BUY, order_pb2.ORDER_SIDE_SELL
LIMIT, MARKET = order_pb2.ORDER_TYPE_LIMIT, order_pb2.ORDER_TYPE_MARKET
K = user_pb2


def explain(entries: list[user_pb2.LedgerEntry], asset: str) -> tuple[Decimal, Decimal]:
    """The (available, locked) that the ledger entries of one asset add up to."""
    available = sum((D(e.available_delta) for e in entries if e.asset == asset), D(0))
    locked = sum((D(e.locked_delta) for e in entries if e.asset == asset), D(0))
    return available, locked


async def test_a_limit_buy_below_the_market_fills_when_the_price_moves_through_it(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    order = await trader.place(side=BUY, type=LIMIT, quantity="0.01", price="49000.00")
    assert order.status == order_pb2.ORDER_STATUS_PENDING
    assert await stack.balances(trader.user_id) == {"USDT": (D("9510"), D("490"))}

    await stack.price("48990.00")  # the market moves through the limit
    filled = await trader.wait(order.order_id)
    assert filled.status == order_pb2.ORDER_STATUS_FILLED
    assert (filled.filled_quantity, filled.average_price) == ("0.01000000", "49000.00000000")
    assert (filled.commission, filled.commission_asset) == ("0.00001000", "BTC")
    assert filled.remaining_quantity == "0.00000000"
    (fill,) = await trader.fills(order.order_id)
    assert (fill.price, fill.quantity, fill.quote_quantity) == ("49000.00000000", "0.01000000", "490.00000000")

    await stack.settled()
    balances = await stack.balances(trader.user_id)
    assert balances["USDT"] == (D("10000") - D("49000") * D("0.01"), D("0"))
    assert balances["BTC"] == (D("0.01") - D("0.00001"), D("0"))

    # The ledger explains every change: it adds up to the balances, and says why.
    entries = await stack.ledger(trader.user_id)
    for asset, balance in balances.items():
        assert explain(entries, asset) == balance
    kinds = [(e.asset, K.LedgerEntryKind.Name(e.kind)) for e in entries if D(e.available_delta) or D(e.locked_delta)]
    assert kinds == [
        ("USDT", "LEDGER_ENTRY_KIND_DEPOSIT"),
        ("USDT", "LEDGER_ENTRY_KIND_RESERVE"),
        ("USDT", "LEDGER_ENTRY_KIND_TRADE_DEBIT"),
        ("BTC", "LEDGER_ENTRY_KIND_TRADE_CREDIT"),
        ("BTC", "LEDGER_ENTRY_KIND_FEE"),
    ]
    assert {e.reference for e in entries if e.kind == K.LEDGER_ENTRY_KIND_RESERVE} == {order.order_id}
    assert {e.reference for e in entries if e.kind == K.LEDGER_ENTRY_KIND_FEE} == {fill.fill_id}


async def test_partial_fill_then_cancel_settles_the_part_and_releases_the_rest(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    order = await trader.place(side=BUY, type=LIMIT, quantity="0.02", price="49000.00")
    await stack.price("49000.00", volume="0.005")  # only 0.005 trades at this update
    partial = await trader.wait(order.order_id, lambda o: o.status == order_pb2.ORDER_STATUS_PARTIALLY_FILLED)
    assert (partial.filled_quantity, partial.remaining_quantity) == ("0.00500000", "0.01500000")

    cancelled = await trader.cancel(order.order_id)
    if cancelled.status != order_pb2.ORDER_STATUS_CANCELLED:  # the confirmation may still be on its way
        assert cancelled.cancel_requested
        cancelled = await trader.wait(order.order_id)
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert not cancelled.cancel_requested
    assert cancelled.filled_quantity == "0.00500000"

    await stack.settled()
    balances = await stack.balances(trader.user_id)
    assert balances["USDT"] == (D("10000") - D("245"), D("0"))  # 0.005 x 49000 spent, the rest back
    assert balances["BTC"] == (D("0.005") - D("0.000005"), D("0"))
    entries = await stack.ledger(trader.user_id)
    assert explain(entries, "USDT") == balances["USDT"]
    releases = [e for e in entries if e.kind == K.LEDGER_ENTRY_KIND_RELEASE]
    assert [D(e.available_delta) for e in releases] == [D("735")]


async def test_a_filled_order_cannot_be_cancelled_and_another_users_order_is_not_found(stack: Stack) -> None:
    import grpc

    alice = await stack.trader({"USDT": "10000"})
    bob = await stack.trader({"USDT": "10000"})
    order = await alice.place(side=BUY, type=MARKET, quantity="0.01")
    await alice.wait(order.order_id)
    for call in (bob.get(order.order_id), bob.cancel(order.order_id), bob.fills(order.order_id)):
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("another user's order must be NOT_FOUND")
    try:
        await alice.cancel(order.order_id)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    else:
        raise AssertionError("a FILLED order cannot be cancelled")
    assert (await bob.orders()).orders == []
