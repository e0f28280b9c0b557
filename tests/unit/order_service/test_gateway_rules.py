"""A symbol's rules as the gateway contract states them, decoded without the exchange's own words.

PlaceOrder applies them before it reserves anything, so it must refuse exactly what the gateway's
SubmitOrder would refuse, naming the same field: the last tests hold the two to that.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.binance.schemas import parse_symbol_rules
from services.exchange_gateway.api.codec import encode_rules
from services.exchange_gateway.domain.model import OrderType as GatewayType
from services.exchange_gateway.domain.model import Side as GatewaySide
from services.exchange_gateway.domain.validation import check_filters, parse_request
from services.order_service.adapters.gateway_client import decode_rules
from services.order_service.domain.market_data import SymbolStatus, symbol_info
from services.order_service.domain.model import OrderType, Side
from services.order_service.domain.placement import NewOrderRequest, validate
from shared.errors import FailedPrecondition, InvalidArgument
from trading.gateway.v1 import gateway_pb2

RULES = gateway_pb2.SymbolRules(
    symbol="BTCUSDT",
    status="TRADING",
    base_asset="BTC",
    quote_asset="USDT",
    tick_size="0.01000000",
    order_types=["LIMIT", "STOP_LOSS"],
    trading=True,
    allowed_types=[gateway_pb2.ORDER_TYPE_LIMIT, gateway_pb2.ORDER_TYPE_STOP],
)


def test_the_gateways_verdicts_are_decoded_into_the_public_types() -> None:
    rules = decode_rules(RULES)
    assert rules.trading and rules.tick_size == Decimal("0.01")
    assert rules.order_types == {OrderType.LIMIT, OrderType.STOP}
    assert symbol_info(rules).order_types == (OrderType.LIMIT, OrderType.STOP)


def test_a_symbol_is_halted_by_the_flag_whatever_the_exchange_calls_it() -> None:
    halted = gateway_pb2.SymbolRules()
    halted.CopyFrom(RULES)
    halted.trading = False
    assert symbol_info(decode_rules(halted)).status is SymbolStatus.HALTED
    renamed = gateway_pb2.SymbolRules()
    renamed.CopyFrom(RULES)
    renamed.status = "OPEN_FOR_BUSINESS"
    assert symbol_info(decode_rules(renamed)).status is SymbolStatus.TRADING


def test_no_allowed_types_means_every_type() -> None:
    open_to_all = gateway_pb2.SymbolRules()
    open_to_all.CopyFrom(RULES)
    del open_to_all.allowed_types[:]
    assert symbol_info(decode_rules(open_to_all)).order_types == tuple(OrderType)


# A symbol as Binance's exchangeInfo publishes it, read by the gateway's adapter and sent over the contract.
EXCHANGE_INFO = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "quoteAsset": "USDT",
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"],
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": "100", "stepSize": "0.00001"},
        {
            "filterType": "NOTIONAL",
            "minNotional": "5",
            "applyMinToMarket": True,
            "maxNotional": "9000000",
            "applyMaxToMarket": False,
        },
    ],
}
LAST = Decimal("50000")
SELL = NewOrderRequest(symbol="BTCUSDT", side=Side.SELL, type=OrderType.LIMIT, quantity="0.01", price="49000")


def gateway_verdict(request: NewOrderRequest, info: dict[str, object]) -> str | None:
    """What the gateway's SubmitOrder check says of ``request``: the refused field, "" if not trading, None if fine."""
    parsed = parse_request(
        client_order_id="x",
        symbol=request.symbol,
        side=GatewaySide[request.side.name] if request.side else None,
        type=GatewayType[request.type.name] if request.type else None,
        time_in_force=None,
        quantity=request.quantity,
        price=request.price,
        stop_price=request.stop_price,
    )
    try:
        check_filters(parsed, parse_symbol_rules(info), LAST)
    except InvalidArgument as exc:
        return exc.field
    except FailedPrecondition:
        return ""
    return None


def order_service_verdict(request: NewOrderRequest, info: dict[str, object]) -> str | None:
    """What PlaceOrder's check says of ``request``, with the rules as they come over the contract."""
    try:
        validate(request, decode_rules(encode_rules(parse_symbol_rules(info))), 0, LAST)
    except InvalidArgument as exc:
        return exc.field
    except FailedPrecondition:
        return ""
    return None


@pytest.mark.parametrize(
    ("request_", "info", "refused"),
    [
        (SELL, EXCHANGE_INFO, None),
        (replace(SELL, price="49000.001"), EXCHANGE_INFO, "price"),  # off the tick
        (replace(SELL, price="2000000"), EXCHANGE_INFO, "price"),  # above the highest price
        (replace(SELL, quantity="0.000015"), EXCHANGE_INFO, "quantity"),  # off the step
        (replace(SELL, quantity="0.000001"), EXCHANGE_INFO, "quantity"),  # below the smallest quantity
        (replace(SELL, quantity="0.0001"), EXCHANGE_INFO, "quantity"),  # worth 4.9, below 5
        (replace(SELL, type=OrderType.STOP_LIMIT, stop_price="48000.005"), EXCHANGE_INFO, "stop_price"),
        (replace(SELL, type=OrderType.MARKET, price="", quantity="101"), EXCHANGE_INFO, "quantity"),  # market lot
        (
            replace(SELL, type=OrderType.STOP, price="", stop_price="48000", quantity="0.0001"),
            EXCHANGE_INFO,
            "quantity",
        ),
        (replace(SELL, type=OrderType.TAKE_PROFIT, price="", stop_price="52000"), EXCHANGE_INFO, "type"),
        (SELL, {**EXCHANGE_INFO, "status": "BREAK"}, ""),
    ],
)
def test_placement_refuses_what_the_gateway_would_refuse_naming_the_same_field(
    request_: NewOrderRequest, info: dict[str, object], refused: str | None
) -> None:
    assert gateway_verdict(request_, info) == refused
    assert order_service_verdict(request_, info) == refused
