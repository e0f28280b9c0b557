"""PlaceOrder validation: every field, every rule, an INVALID_ARGUMENT naming the field; and reservations."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from services.order_service.domain.model import OrderType, Side, TimeInForce
from services.order_service.domain.placement import (
    NewOrderRequest,
    ceil_to_scale,
    needs_reference_price,
    reservation,
    validate,
)
from shared.errors import FailedPrecondition, InvalidArgument

from .fakes import BTCUSDT

D = Decimal
NOW = 1_700_000_000_000
LAST = D("50000.00")

LIMIT = NewOrderRequest(symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity="0.01000", price="49000.00")
MARKET = NewOrderRequest(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity="0.01000")
STOP = NewOrderRequest(symbol="BTCUSDT", side=Side.SELL, type=OrderType.STOP, quantity="0.01000", stop_price="48000")
STOP_LIMIT = replace(STOP, type=OrderType.STOP_LIMIT, price="47900.00")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (replace(LIMIT, symbol=""), "symbol"),
        (replace(LIMIT, symbol="btc usdt"), "symbol"),
        (replace(LIMIT, side=None), "side"),
        (replace(LIMIT, type=None), "type"),
        (replace(MARKET, time_in_force=TimeInForce.GTC), "time_in_force"),
        (replace(STOP, time_in_force=TimeInForce.IOC), "time_in_force"),
        (replace(LIMIT, client_order_id="has space"), "client_order_id"),
        (replace(LIMIT, client_order_id="x" * 65), "client_order_id"),
        (replace(LIMIT, quantity=""), "quantity"),
        (replace(LIMIT, quantity="abc"), "quantity"),
        (replace(LIMIT, quantity="1e-3"), "quantity"),
        (replace(LIMIT, quantity="-0.01"), "quantity"),
        (replace(LIMIT, quantity="0"), "quantity"),
        (replace(LIMIT, quantity="0.000000001"), "quantity"),  # more than 8 places
        (replace(LIMIT, quantity="0.010005"), "quantity"),  # not a multiple of the step 0.00001
        (replace(LIMIT, quantity="0.000001"), "quantity"),  # below minQty... and off-step
        (replace(LIMIT, quantity="9000.00001"), "quantity"),  # above maxQty
        (replace(MARKET, quantity="100.00001"), "quantity"),  # above MARKET_LOT_SIZE maxQty
        (replace(LIMIT, price=""), "price"),
        (replace(LIMIT, price="49000.001"), "price"),  # not a tick multiple
        (replace(LIMIT, price="0"), "price"),
        (replace(LIMIT, price="1000000.01"), "price"),  # above maxPrice
        (replace(LIMIT, price=" 49000"), "price"),
        (replace(LIMIT, stop_price="48000"), "stop_price"),  # LIMIT takes no stop price
        (replace(MARKET, price="49000"), "price"),  # MARKET takes no price
        (replace(MARKET, stop_price="49000"), "stop_price"),
        (replace(STOP, stop_price=""), "stop_price"),
        (replace(STOP, price="48000"), "price"),  # STOP takes no limit price
        (replace(STOP, stop_price="48000.005"), "stop_price"),
        (replace(STOP_LIMIT, price=""), "price"),
        (replace(STOP_LIMIT, stop_price=""), "stop_price"),
        (replace(LIMIT, quantity="0.00010", price="49000.00"), "quantity"),  # notional 4.9 < 5
        (replace(LIMIT, quantity="200.00000", price="49000.00"), "quantity"),  # notional 9.8M > 9M
        (replace(MARKET, quantity="0.00001"), "quantity"),  # market notional 0.5 < 5 (applyMinToMarket)
        (replace(LIMIT, expire_time_ms=NOW), "expire_time"),
        (replace(LIMIT, expire_time_ms=NOW - 1), "expire_time"),
        (replace(LIMIT, expire_time_ms=0), "expire_time"),
    ],
)
def test_a_bad_field_is_invalid_argument_naming_it(request_: NewOrderRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate(request_, BTCUSDT, NOW, LAST)
    assert raised.value.field == field


def test_an_order_type_the_symbol_does_not_allow_is_refused() -> None:
    rules = replace(BTCUSDT, order_types=frozenset({OrderType.LIMIT, OrderType.MARKET}))
    with pytest.raises(InvalidArgument) as raised:
        validate(STOP, rules, NOW, LAST)
    assert raised.value.field == "type"


def test_a_symbol_that_is_not_trading_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        validate(LIMIT, replace(BTCUSDT, status="BREAK", trading=False), NOW, LAST)
    assert raised.value.reason == "SYMBOL_NOT_TRADING" and "BREAK" in raised.value.message


def test_the_status_word_is_not_interpreted_only_the_trading_flag() -> None:
    assert validate(LIMIT, replace(BTCUSDT, status="SOMETHING_NEW"), NOW, LAST).symbol == "BTCUSDT"


@pytest.mark.parametrize(
    ("request_", "tif"),
    [
        (LIMIT, TimeInForce.GTC),
        (replace(LIMIT, time_in_force=TimeInForce.IOC), TimeInForce.IOC),
        (replace(LIMIT, time_in_force=TimeInForce.FOK), TimeInForce.FOK),
        (STOP_LIMIT, TimeInForce.GTC),
        (MARKET, TimeInForce.NONE),
        (STOP, TimeInForce.NONE),
    ],
)
def test_valid_orders_pass_with_their_time_in_force(request_: NewOrderRequest, tif: TimeInForce) -> None:
    valid = validate(request_, BTCUSDT, NOW, LAST)
    assert valid.time_in_force is tif
    assert valid.quantity == D("0.01")


def test_a_valid_limit_keeps_exact_values_and_the_client_order_id() -> None:
    valid = validate(replace(LIMIT, client_order_id="my-id_1.2:3", expire_time_ms=NOW + 1), BTCUSDT, NOW, LAST)
    assert (valid.price, valid.stop_price, valid.client_order_id) == (D("49000.00"), None, "my-id_1.2:3")
    assert valid.expire_time_ms == NOW + 1


def test_zero_limits_in_the_rules_mean_no_limit() -> None:
    loose = replace(BTCUSDT, min_quantity=D(0), max_quantity=D(0), step_size=D(0), min_notional=D(0), max_price=D(0))
    valid = validate(replace(LIMIT, quantity="0.00000001", price="99999999.99"), loose, NOW, LAST)
    assert valid.quantity == D("0.00000001")


def test_which_orders_need_the_last_price() -> None:
    assert needs_reference_price(Side.BUY, OrderType.MARKET, BTCUSDT)
    assert needs_reference_price(Side.SELL, OrderType.MARKET, BTCUSDT)  # applyMinToMarket
    assert not needs_reference_price(Side.SELL, OrderType.MARKET, replace(BTCUSDT, apply_min_to_market=False))
    assert needs_reference_price(Side.BUY, OrderType.STOP, BTCUSDT)
    assert not needs_reference_price(Side.SELL, OrderType.STOP, BTCUSDT)
    assert not needs_reference_price(Side.BUY, OrderType.LIMIT, BTCUSDT)


P = D("0.05")


@pytest.mark.parametrize(
    ("request_", "last", "asset", "amount"),
    [
        # BUY LIMIT: price x quantity exactly.
        (LIMIT, LAST, "USDT", D("490.00000000")),
        # BUY STOP_LIMIT: price x quantity.
        (replace(STOP_LIMIT, side=Side.BUY, stop_price="51000", price="51100.00"), LAST, "USDT", D("511.00")),
        # BUY MARKET: last x quantity x 1.05.
        (MARKET, LAST, "USDT", D("525.00")),
        # BUY STOP: max(last, stop) x quantity x 1.05.
        (replace(STOP, side=Side.BUY, stop_price="51000"), LAST, "USDT", D("535.50")),
        (replace(STOP, side=Side.BUY, stop_price="49000"), LAST, "USDT", D("525.00")),
        # SELL: the base quantity, whatever the type.
        (replace(LIMIT, side=Side.SELL), LAST, "BTC", D("0.01")),
        (replace(MARKET, side=Side.SELL), LAST, "BTC", D("0.01")),
        (STOP, LAST, "BTC", D("0.01")),
        # Rounded up, never down, to 8 places.
        # 50000.01 x 0.01003 x 1.05 = 526.575105315
        (replace(MARKET, quantity="0.01003"), D("50000.01"), "USDT", D("526.57510532")),
    ],
)
def test_reservation_amounts(request_: NewOrderRequest, last: Decimal, asset: str, amount: Decimal) -> None:
    valid = validate(request_, BTCUSDT, NOW, last)
    assert reservation(valid, BTCUSDT, last, P) == (asset, amount)


def test_rounding_up_covers_the_exact_cost() -> None:
    assert ceil_to_scale(D("526.575105315")) == D("526.57510532")
    assert ceil_to_scale(D("1.00000000")) == D("1.00000000")


def test_a_market_buy_without_a_price_is_refused() -> None:
    valid = validate(replace(MARKET, side=Side.BUY), replace(BTCUSDT, apply_min_to_market=False), NOW, None)
    with pytest.raises(FailedPrecondition):
        reservation(valid, BTCUSDT, None, P)
