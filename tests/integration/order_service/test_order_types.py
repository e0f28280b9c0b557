"""MARKET, STOP and STOP_LIMIT in both directions, IOC and FOK, and expiry, against the simulator."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from trading.order.v1 import order_pb2

from .conftest import Stack, Trader

D = Decimal
pb = order_pb2
BUY, SELL = pb.ORDER_SIDE_BUY, pb.ORDER_SIDE_SELL


async def assert_settled_exactly(stack: Stack, trader: Trader, order: pb.Order, before: dict[str, tuple[D, D]]) -> None:
    """Balances moved by exactly the order's fills: quote for base, minus the commission, nothing locked."""
    await stack.settled()
    after = await stack.balances(trader.user_id)
    qty, quote, fee = D(order.filled_quantity), D(order.filled_quote_quantity), D(order.commission)
    usdt0, btc0 = before.get("USDT", (D(0), D(0)))[0], before.get("BTC", (D(0), D(0)))[0]
    if order.side == BUY:
        assert order.commission_asset == "BTC"
        assert after["USDT"] == (usdt0 - quote, D(0))
        assert after["BTC"] == (btc0 + qty - fee, D(0))
    else:
        assert order.commission_asset == "USDT"
        assert after["BTC"] == (btc0 - qty, D(0))
        assert after["USDT"] == (usdt0 + quote - fee, D(0))
    fills = await trader.fills(order.order_id)
    assert sum(D(f.quantity) for f in fills) == qty
    assert sum(D(f.quote_quantity) for f in fills) == quote


@pytest.mark.parametrize("side", [BUY, SELL])
async def test_a_market_order_fills_at_once(stack: Stack, side: int) -> None:
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})
    before = await stack.balances(trader.user_id)
    order = await trader.place(side=side, type=pb.ORDER_TYPE_MARKET, quantity="0.01")
    filled = await trader.wait(order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    assert filled.time_in_force == pb.TIME_IN_FORCE_UNSPECIFIED
    await assert_settled_exactly(stack, trader, filled, before)


STOPS: list[tuple[int, int, dict[str, Any], str]] = [
    # (side, type, prices, where the market goes to trigger it)
    (SELL, pb.ORDER_TYPE_STOP, {"stop_price": "49000.00"}, "48990.00"),
    (BUY, pb.ORDER_TYPE_STOP, {"stop_price": "51000.00"}, "51000.00"),
    (SELL, pb.ORDER_TYPE_STOP_LIMIT, {"stop_price": "49000.00", "price": "48950.00"}, "48990.00"),
    (BUY, pb.ORDER_TYPE_STOP_LIMIT, {"stop_price": "51000.00", "price": "51050.00"}, "51000.00"),
    # Take-profits trigger from the other side: a sell when the price rises to its stop, a buy when it falls.
    (SELL, pb.ORDER_TYPE_TAKE_PROFIT, {"stop_price": "51000.00"}, "51000.00"),
    (BUY, pb.ORDER_TYPE_TAKE_PROFIT, {"stop_price": "49000.00"}, "48990.00"),
    (SELL, pb.ORDER_TYPE_TAKE_PROFIT_LIMIT, {"stop_price": "51000.00", "price": "50950.00"}, "51000.00"),
    (BUY, pb.ORDER_TYPE_TAKE_PROFIT_LIMIT, {"stop_price": "49000.00", "price": "49050.00"}, "48990.00"),
]


@pytest.mark.parametrize(("side", "type_", "prices", "trigger"), STOPS)
async def test_a_stop_order_waits_for_its_trigger_then_fills(
    stack: Stack, side: int, type_: int, prices: dict[str, Any], trigger: str
) -> None:
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})
    before = await stack.balances(trader.user_id)
    order = await trader.place(side=side, type=type_, quantity="0.01", **prices)
    assert order.status == pb.ORDER_STATUS_PENDING
    await stack.price("50000.00")  # nothing happens at the current price
    assert (await trader.get(order.order_id)).status == pb.ORDER_STATUS_PENDING
    await stack.price(trigger)
    filled = await trader.wait(order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    await assert_settled_exactly(stack, trader, filled, before)


async def test_ioc_that_cannot_fill_expires_and_releases(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    order = await trader.place(
        side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="49000.00", time_in_force=pb.TIME_IN_FORCE_IOC
    )
    ended = await trader.wait(order.order_id)
    assert ended.status == pb.ORDER_STATUS_EXPIRED
    assert ended.time_in_force == pb.TIME_IN_FORCE_IOC
    await stack.settled()
    assert (await stack.balances(trader.user_id))["USDT"] == (D("10000"), D("0"))


async def test_ioc_that_can_fill_fills(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    before = await stack.balances(trader.user_id)
    order = await trader.place(
        side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="50100.00", time_in_force=pb.TIME_IN_FORCE_IOC
    )
    filled = await trader.wait(order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    await assert_settled_exactly(stack, trader, filled, before)


async def test_fok_fills_completely_or_expires(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "100000", "BTC": "1"})
    before = await stack.balances(trader.user_id)
    filled = await trader.place(
        side=SELL, type=pb.ORDER_TYPE_LIMIT, quantity="0.02", price="49900.00", time_in_force=pb.TIME_IN_FORCE_FOK
    )
    filled = await trader.wait(filled.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    await assert_settled_exactly(stack, trader, filled, before)

    # A thin book: the whole quantity is not there, so nothing trades.
    await stack.sim_post("liquidity", {"symbol": "BTCUSDT", "level_quantity": "0.001", "levels": 2})
    before = await stack.balances(trader.user_id)
    killed = await trader.place(
        side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="50100.00", time_in_force=pb.TIME_IN_FORCE_FOK
    )
    killed = await trader.wait(killed.order_id)
    assert killed.status == pb.ORDER_STATUS_EXPIRED
    assert killed.filled_quantity == "0.00000000"
    await stack.settled()
    assert await stack.balances(trader.user_id) == before


async def test_an_order_expires_at_its_expire_time(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    expire = Timestamp()
    expire.FromMilliseconds(int(time.time() * 1000) + 1500)
    order = await trader.place(
        side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="49000.00", expire_time=expire
    )
    assert order.expire_time == expire
    assert order.status == pb.ORDER_STATUS_PENDING
    ended = await trader.wait(order.order_id)
    assert ended.status == pb.ORDER_STATUS_EXPIRED
    assert ended.expire_reason == "expire_time reached" and ended.reject_reason == ""
    await stack.settled()
    assert (await stack.balances(trader.user_id))["USDT"] == (D("10000"), D("0"))


@pytest.mark.parametrize(("side", "price", "through"), [(BUY, "49000.00", "48990.00"), (SELL, "51000.00", "51010.00")])
async def test_a_limit_maker_rests_and_fills_as_maker(stack: Stack, side: int, price: str, through: str) -> None:
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})
    before = await stack.balances(trader.user_id)
    order = await trader.place(side=side, type=pb.ORDER_TYPE_LIMIT_MAKER, quantity="0.01", price=price)
    assert order.status == pb.ORDER_STATUS_PENDING and order.time_in_force == pb.TIME_IN_FORCE_UNSPECIFIED
    await stack.price(through)
    filled = await trader.wait(order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    (fill,) = await trader.fills(order.order_id)
    assert fill.is_maker
    await assert_settled_exactly(stack, trader, filled, before)


@pytest.mark.parametrize(("side", "price"), [(BUY, "50000.00"), (BUY, "50500.00"), (SELL, "50000.00")])
async def test_a_limit_maker_that_would_take_is_refused_without_reserving_anything(
    stack: Stack, side: int, price: str
) -> None:
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})
    before = await stack.balances(trader.user_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await trader.place(side=side, type=pb.ORDER_TYPE_LIMIT_MAKER, quantity="0.01", price=price)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "price" in (refused.value.details() or "") and "would take" in (refused.value.details() or "")
    assert await stack.balances(trader.user_id) == before
    assert not (await trader.orders()).orders


async def test_a_limit_maker_takes_no_time_in_force(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await trader.place(
            side=BUY,
            type=pb.ORDER_TYPE_LIMIT_MAKER,
            quantity="0.01",
            price="49000.00",
            time_in_force=pb.TIME_IN_FORCE_GTC,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "time_in_force" in (refused.value.details() or "")
