"""Money that cannot get stuck, through the real stack: capped buys and parked settlements.

A MARKET buy reserves last price x quantity x (1 + protection) and is sent as a LIMIT IOC at that
price cap, so the exchange itself refuses to spend more than was reserved, however far the market
jumps between the reservation and the fill. A settlement the user service refuses for good is
parked after a bounded number of tries, holds nothing but its own order, and is applied once an
operator retries it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

import grpc
import pytest

from services.order_service.domain.lifecycle import CAPPED_BUY_EXPIRED
from trading.order.v1 import order_pb2, order_service_pb2
from trading.user.v1 import user_pb2

from .conftest import ADMIN, Stack, Trader

D = Decimal
pb = order_pb2
BUY, SELL = pb.ORDER_SIDE_BUY, pb.ORDER_SIDE_SELL


def spent(entries: list[user_pb2.LedgerEntry], asset: str) -> Decimal:
    """What the order's trades took from the user in ``asset`` (TRADE_DEBIT entries, as a positive amount)."""
    return -sum(
        (
            D(e.available_delta) + D(e.locked_delta)
            for e in entries
            if e.kind == user_pb2.LEDGER_ENTRY_KIND_TRADE_DEBIT and e.asset == asset
        ),
        D(0),
    )


async def place_while_the_market_moves(stack: Stack, trader: Trader, to_price: str) -> pb.Order:
    """Place a MARKET buy whose request reaches the exchange only after the market moved to ``to_price``."""
    await stack.sim_post("faults", {"action": "delay", "endpoint": "order.new", "when": "before", "delay_ms": 1500})
    placing = asyncio.create_task(trader.place(side=BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01"))
    await asyncio.sleep(0.5)  # the order is reserved at 50,000 and on its way to the exchange
    await stack.price(to_price)
    order = await placing
    return await trader.wait(order.order_id)


async def test_a_market_buy_in_a_market_that_jumps_20_percent_never_spends_more_than_reserved(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    ended = await place_while_the_market_moves(stack, trader, "60000.00")  # +20%
    await stack.settled()

    assert ended.status == pb.ORDER_STATUS_EXPIRED
    assert ended.filled_quantity == "0.00000000"
    assert ended.expire_reason.startswith(CAPPED_BUY_EXPIRED) and ended.reject_reason == ""
    ledger = await stack.ledger(trader.user_id)  # the user's only order
    reserved = sum((D(e.locked_delta) for e in ledger if e.kind == user_pb2.LEDGER_ENTRY_KIND_RESERVE), D(0))
    assert reserved == D("525"), "50,000 x 0.01 x 1.05"
    assert spent(ledger, "USDT") == 0
    assert await stack.balances(trader.user_id) == {"USDT": (D("10000"), D("0"))}


async def test_a_market_buy_whose_cap_binds_fills_in_part_then_expires_with_the_rest_released(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    # A thin book: 0.004 BTC per level, levels 0.01% apart. From 52,490 only two levels are at or
    # below the cap of 52,500 (525 USDT / 0.01 BTC), so 0.008 of the 0.01 can trade.
    await stack.sim_post("liquidity", {"symbol": "BTCUSDT", "level_quantity": "0.004"})
    ended = await place_while_the_market_moves(stack, trader, "52490.00")
    await stack.settled()

    assert ended.status == pb.ORDER_STATUS_EXPIRED
    assert D(ended.filled_quantity) == D("0.008")
    assert D(ended.average_price) <= D("52500")
    ledger = await stack.ledger(trader.user_id)  # the user's only order
    assert D("0") < spent(ledger, "USDT") <= D("525")
    assert spent(ledger, "USDT") == D(ended.filled_quote_quantity)
    balances = await stack.balances(trader.user_id)
    assert balances["USDT"] == (D("10000") - D(ended.filled_quote_quantity), D("0")), "the rest was released"
    assert balances["BTC"] == (D("0.008") - D(ended.commission), D("0"))


def _take_reservation(db: str, order_id: str) -> tuple[object, ...]:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT * FROM reservations WHERE order_id = ?", (order_id,)).fetchone()
        conn.execute("DELETE FROM reservations WHERE order_id = ?", (order_id,))
    assert row is not None
    return tuple(row)


def _put_reservation(db: str, row: tuple[object, ...]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"INSERT INTO reservations VALUES ({', '.join('?' * len(row))})", row)


async def test_a_settlement_refused_for_good_is_parked_holds_no_other_order_and_settles_after_an_admin_retry(
    stack: Stack,
) -> None:
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})
    stuck = await trader.place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="49000.00")
    other = await trader.place(side=BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="48000.00")
    # The cause: the user service has lost the order's reservation, so it refuses the settlement
    # (FAILED_PRECONDITION) however often it is asked.
    users_db = str(stack.tmp / "users.db")
    row = _take_reservation(users_db, stuck.order_id)

    await stack.price("48990.00")
    await trader.wait(stuck.order_id)
    admin = stack.order_stub
    parked: list[order_service_pb2.ParkedEffect] = []
    for _ in range(200):
        parked = list(
            (await admin.ListParkedEffects(order_service_pb2.ListParkedEffectsRequest(), metadata=ADMIN)).effects
        )
        if parked:
            break
        await asyncio.sleep(0.05)
    (effect,) = parked
    assert (effect.order_id, effect.user_id, effect.kind) == (stuck.order_id, trader.user_id, "SETTLE_TRADE")
    assert "RESERVATION_MISMATCH" in effect.reason and effect.attempts == stack.order_config.effect_max_attempts

    # Nothing else waits for it: the same user's other orders fill and settle.
    sold = await trader.wait((await trader.place(side=SELL, type=pb.ORDER_TYPE_MARKET, quantity="0.02")).order_id)
    await stack.price("47990.00")
    await trader.wait(other.order_id)
    await stack.settled()
    balances = await stack.balances(trader.user_id)
    assert balances["BTC"][0] == D("1") - D("0.02") + D("0.01") - D("0.00001")  # the sell and `other`, not `stuck`
    assert balances["USDT"][1] == D("490"), "only the parked order's money is still locked"
    assert D(sold.filled_quantity) == D("0.02")

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await trader.stub.ListParkedEffects(order_service_pb2.ListParkedEffectsRequest(), metadata=trader.auth)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await admin.RetryParkedEffect(order_service_pb2.RetryParkedEffectRequest(effect_id=987654), metadata=ADMIN)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await admin.RetryParkedEffect(order_service_pb2.RetryParkedEffectRequest(), metadata=ADMIN)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    _put_reservation(users_db, row)  # the cause is fixed
    await admin.RetryParkedEffect(
        order_service_pb2.RetryParkedEffectRequest(effect_id=effect.effect_id), metadata=ADMIN
    )
    await stack.settled()
    after = await stack.balances(trader.user_id)
    assert after["USDT"] == (
        D("10000") - D("490") - D("480") + D(sold.filled_quote_quantity) - D(sold.commission),
        D("0"),
    )
    assert after["BTC"][0] == balances["BTC"][0] + D("0.01") - D("0.00001")
    assert not (await admin.ListParkedEffects(order_service_pb2.ListParkedEffectsRequest(), metadata=ADMIN)).effects
