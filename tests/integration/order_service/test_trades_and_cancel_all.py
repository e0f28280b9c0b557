"""ListTrades (a user's fills across orders) and CancelAllOrders (all and only the caller's open orders)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from trading.order.v1 import order_pb2, order_service_pb2

from .conftest import Stack, Trader

D = Decimal
pb = order_pb2
BUY = pb.ORDER_SIDE_BUY


async def list_trades(trader: Trader, **fields: object) -> order_service_pb2.ListTradesResponse:
    return await trader.stub.ListTrades(order_service_pb2.ListTradesRequest(**fields), metadata=trader.auth)


async def market_buy(trader: Trader, symbol: str, quantity: str) -> pb.Order:
    order = await trader.place(symbol=symbol, side=BUY, type=pb.ORDER_TYPE_MARKET, quantity=quantity)
    return await trader.wait(order.order_id)


def ts(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


async def test_list_trades_returns_exactly_the_callers_fills_across_orders_newest_first_in_pages(
    stack: Stack,
) -> None:
    alice = await stack.trader({"USDT": "10000"})
    bob = await stack.trader({"USDT": "10000"})
    mine = []
    for symbol, quantity in (("BTCUSDT", "0.01"), ("ETHUSDT", "0.1"), ("BTCUSDT", "0.02"), ("BTCUSDT", "0.03")):
        mine.append(await market_buy(alice, symbol, quantity))
        await asyncio.sleep(0.01)  # distinct trade times
    await market_buy(bob, "BTCUSDT", "0.01")
    fills = [f for order in mine for f in await alice.fills(order.order_id)]

    everything = await list_trades(alice, page_size=1000)
    newest_first = sorted(fills, key=lambda f: (f.trade_time.ToMilliseconds(), f.fill_id), reverse=True)
    assert [t.fill_id for t in everything.trades] == [f.fill_id for f in newest_first]
    assert {t.order_id for t in everything.trades} == {o.order_id for o in mine}, "never bob's"
    assert all(D(t.commission) > 0 and t.commission_asset for t in everything.trades)
    assert everything.next_page_token == ""
    beyond = await list_trades(alice, page_size=5000)  # lowered to the maximum, as the user service does
    assert [t.fill_id for t in beyond.trades] == [t.fill_id for t in everything.trades]

    btc = await list_trades(alice, symbol="BTCUSDT")
    assert {t.symbol for t in btc.trades} == {"BTCUSDT"} and len(btc.trades) == len(fills) - 1

    paged: list[str] = []
    token = ""
    while True:
        page = await list_trades(alice, page_size=2, page_token=token)
        assert len(page.trades) <= 2
        paged.extend(t.fill_id for t in page.trades)
        token = page.next_page_token
        if not token:
            break
    assert paged == [t.fill_id for t in everything.trades]

    first_ms = min(f.trade_time.ToMilliseconds() for f in fills)
    last_ms = max(f.trade_time.ToMilliseconds() for f in fills)
    window = await list_trades(alice, start_time=ts(first_ms + 1), end_time=ts(last_ms))
    expected = [f.fill_id for f in newest_first if first_ms < f.trade_time.ToMilliseconds() < last_ms]
    assert [t.fill_id for t in window.trades] == expected


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"symbol": "btc-usdt"}, "symbol"),
        ({"start_time": ts(2_000_000), "end_time": ts(1_000_000)}, "end_time"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
async def test_list_trades_bad_input_names_the_field(stack: Stack, fields: dict[str, object], field: str) -> None:
    trader = await stack.trader({"USDT": "100"})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await list_trades(trader, **fields)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.value.details() or "")


async def test_cancel_all_cancels_all_and_only_the_callers_open_orders_and_releases_their_funds_exactly(
    stack: Stack,
) -> None:
    alice = await stack.trader({"USDT": "10000"})
    bob = await stack.trader({"USDT": "10000"})
    btc = [
        await alice.place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price=price)
        for price in ("45000.00", "44000.00")
    ]
    eth = await alice.place(symbol="ETHUSDT", side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.1", price="2500.00")
    bobs = await bob.place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="45000.00")
    filled = await market_buy(alice, "BTCUSDT", "0.01")
    await stack.settled()
    assert (await stack.balances(alice.user_id))["USDT"][1] == D("450") + D("440") + D("250")

    first = await alice.stub.CancelAllOrders(
        order_service_pb2.CancelAllOrdersRequest(symbol="BTCUSDT"), metadata=alice.auth
    )
    done = {o.order_id for o in first.cancelled} | {o.order_id for o in first.pending}
    assert done == {o.order_id for o in btc} and not first.failed
    for order in btc:
        assert (await alice.wait(order.order_id)).status == pb.ORDER_STATUS_CANCELLED
    assert (await alice.get(eth.order_id)).status == pb.ORDER_STATUS_PENDING, "another symbol is left alone"
    assert (await bob.get(bobs.order_id)).status == pb.ORDER_STATUS_PENDING, "never another user's order"
    assert (await alice.get(filled.order_id)).status == pb.ORDER_STATUS_FILLED

    second = await alice.stub.CancelAllOrders(order_service_pb2.CancelAllOrdersRequest(), metadata=alice.auth)
    assert {o.order_id for o in [*second.cancelled, *second.pending]} == {eth.order_id}
    assert (await alice.wait(eth.order_id)).status == pb.ORDER_STATUS_CANCELLED
    await stack.settled()
    usdt = (await stack.balances(alice.user_id))["USDT"]
    assert usdt == (D("10000") - D(filled.filled_quote_quantity), D("0")), "every reservation released exactly"
    assert (await stack.balances(bob.user_id))["USDT"] == (D("9550"), D("450"))

    nothing = await alice.stub.CancelAllOrders(order_service_pb2.CancelAllOrdersRequest(), metadata=alice.auth)
    assert not nothing.cancelled and not nothing.pending and not nothing.failed
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await alice.stub.CancelAllOrders(order_service_pb2.CancelAllOrdersRequest(symbol="btc"), metadata=alice.auth)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
