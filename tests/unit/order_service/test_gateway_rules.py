"""A symbol's rules as the gateway contract states them, decoded without the exchange's own words."""

from __future__ import annotations

from decimal import Decimal

from services.order_service.adapters.gateway_client import decode_rules
from services.order_service.domain.market_data import SymbolStatus, symbol_info
from services.order_service.domain.model import OrderType
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
