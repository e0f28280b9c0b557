"""Request shape and exchangeInfo filters, checked before a request is spent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.binance.schemas import parse_symbol_rules
from services.exchange_gateway.api.codec import encode_rules
from services.exchange_gateway.domain.model import OrderType, Side, TimeInForce
from services.exchange_gateway.domain.validation import check_filters, needs_last_price, parse_request, plain
from shared.errors import FailedPrecondition, InvalidArgument
from trading.gateway.v1 import gateway_pb2

D = Decimal

# BTCUSDT as the simulator and Binance publish it.
BTCUSDT = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "quoteAsset": "USDT",
    "baseAssetPrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"],
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000", "stepSize": "0"},
        {
            "filterType": "PERCENT_PRICE_BY_SIDE",
            "bidMultiplierUp": "5",
            "bidMultiplierDown": "0.2",
            "askMultiplierUp": "5",
            "askMultiplierDown": "0.2",
            "avgPriceMins": 5,
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": "5.00000000",
            "applyMinToMarket": True,
            "maxNotional": "9000000.00000000",
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ],
}
RULES = parse_symbol_rules(BTCUSDT)
LAST = D("50000")


def request(**overrides):
    fields = {
        "client_order_id": "abc_123-X",
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "time_in_force": None,
        "quantity": "0.01",
        "price": "49000.00",
        "stop_price": "",
    }
    fields.update(overrides)
    return parse_request(**fields)


def field_of(call) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call()
    return caught.value.field


def test_rules_are_read_from_exchange_info():
    assert RULES.tick_size == D("0.01")
    assert RULES.step_size == D("0.00001")
    assert RULES.min_notional == D(5) and RULES.apply_min_to_market
    assert RULES.bid_multiplier_up == D(5)
    assert RULES.max_num_orders == 200
    assert OrderType.STOP_LIMIT in RULES.allowed_types


def test_a_valid_limit_order_passes_and_defaults_to_gtc():
    order = request()
    assert order.time_in_force is TimeInForce.GTC
    check_filters(order, RULES, LAST)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"client_order_id": ""}, "client_order_id"),
        ({"client_order_id": "x" * 37}, "client_order_id"),
        ({"client_order_id": "bad id!"}, "client_order_id"),
        ({"side": None}, "side"),
        ({"type": None}, "type"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "1e-3"}, "quantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"price": ""}, "price"),
        ({"type": OrderType.MARKET, "price": "", "time_in_force": TimeInForce.GTC}, "time_in_force"),
        ({"type": OrderType.STOP_LIMIT}, "stop_price"),
        ({"stop_price": "100"}, "stop_price"),
    ],
)
def test_shape_errors_name_the_field(overrides, field):
    assert field_of(lambda: request(**overrides)) == field


def test_market_order_must_not_have_a_price():
    assert field_of(lambda: request(type=OrderType.MARKET)) == "price"


@pytest.mark.parametrize(
    ("overrides", "last", "field", "words"),
    [
        ({"price": "49000.001"}, LAST, "price", "tick size"),
        ({"price": "0.001"}, None, "price", "minimum price"),
        ({"price": "2000000"}, None, "price", "maximum price"),
        ({"quantity": "0.000001"}, LAST, "quantity", "minimum quantity"),
        ({"quantity": "0.000015"}, LAST, "quantity", "step size"),
        ({"quantity": "9001"}, LAST, "quantity", "maximum quantity"),
        ({"quantity": "0.0001", "price": "40000"}, LAST, "quantity", "NOTIONAL"),
        ({"price": "250001"}, LAST, "price", "PERCENT_PRICE_BY_SIDE"),
        ({"price": "9999.99"}, LAST, "price", "PERCENT_PRICE_BY_SIDE"),
        ({"side": Side.SELL, "price": "9999.99"}, LAST, "price", "PERCENT_PRICE_BY_SIDE"),
        ({"type": OrderType.STOP_LIMIT, "stop_price": "48000.005"}, LAST, "stop_price", "tick size"),
        ({"type": OrderType.MARKET, "price": "", "quantity": "0.00001"}, LAST, "quantity", "NOTIONAL"),
        ({"type": OrderType.MARKET, "price": "", "quantity": "101"}, LAST, "quantity", "MARKET_LOT_SIZE"),
    ],
)
def test_filter_violations_name_the_field(overrides, last, field, words):
    order = request(**overrides)
    with pytest.raises(InvalidArgument) as caught:
        check_filters(order, RULES, last)
    assert caught.value.field == field
    assert words in caught.value.description


def test_price_checks_that_need_the_current_price_are_skipped_without_one():
    check_filters(request(price="250001"), RULES, None)
    check_filters(request(type=OrderType.MARKET, price="", quantity="0.00001"), RULES, None)


def test_which_requests_need_the_last_price():
    assert needs_last_price(request(type=OrderType.MARKET, price=""), RULES)
    assert needs_last_price(request(), RULES)
    assert not needs_last_price(request(type=OrderType.STOP, price="", stop_price="40000"), RULES)


def test_a_symbol_that_is_not_trading_is_refused():
    halted = parse_symbol_rules({**BTCUSDT, "status": "HALT"})
    with pytest.raises(FailedPrecondition):
        check_filters(request(), halted, LAST)


def test_order_types_the_symbol_does_not_allow():
    limit_only = parse_symbol_rules({**BTCUSDT, "orderTypes": ["LIMIT"]})
    order = request(type=OrderType.STOP_LIMIT, stop_price="48000")
    with pytest.raises(InvalidArgument) as caught:
        check_filters(order, limit_only, LAST)
    assert caught.value.field == "type"


def test_older_min_notional_filter_is_understood():
    legacy = dict(BTCUSDT)
    legacy["filters"] = [f for f in BTCUSDT["filters"] if f["filterType"] != "NOTIONAL"] + [
        {"filterType": "MIN_NOTIONAL", "minNotional": "10", "applyToMarket": True, "avgPriceMins": 5}
    ]
    rules = parse_symbol_rules(legacy)
    with pytest.raises(InvalidArgument):
        check_filters(request(quantity="0.0002", price="49000"), rules, LAST)


def test_plain_formats_without_exponent_or_trailing_zeros():
    assert plain(D("0.01000000")) == "0.01"
    assert plain(D("1E+2")) == "100"
    assert plain(D("49000.00")) == "49000"
    assert plain(D("0E-8")) == "0"


def test_the_adapter_says_what_the_exchanges_words_mean():
    assert RULES.trading and RULES.status == "TRADING"
    assert RULES.allowed_types == {
        OrderType.LIMIT,
        OrderType.LIMIT_MAKER,
        OrderType.MARKET,
        OrderType.STOP,
        OrderType.STOP_LIMIT,
    }
    on_break = parse_symbol_rules({**BTCUSDT, "status": "BREAK"})
    assert not on_break.trading and on_break.status == "BREAK"


def test_the_contract_carries_the_verdicts_in_its_own_terms():
    sent = encode_rules(parse_symbol_rules({**BTCUSDT, "status": "HALT", "orderTypes": ["LIMIT", "STOP_LOSS"]}))
    assert not sent.trading and sent.status == "HALT"
    assert list(sent.allowed_types) == [gateway_pb2.ORDER_TYPE_LIMIT, gateway_pb2.ORDER_TYPE_STOP]
    assert list(sent.order_types) == ["LIMIT", "STOP_LOSS"]
    assert encode_rules(RULES).trading
