"""Proto <-> domain conversions for trading.gateway.v1."""

from __future__ import annotations

from decimal import Decimal

from services.exchange_gateway.domain.model import (
    Anomaly,
    AnomalyKind,
    Balance,
    ExecType,
    Execution,
    ForeignOrder,
    Order,
    OrderStatus,
    OrderType,
    Side,
    SymbolRules,
    TimeInForce,
)
from shared.money import CTX, QUANTUM, SCALE
from shared.proto_time import ts_from_ms
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2

SIDE_IN = {gateway_pb2.SIDE_BUY: Side.BUY, gateway_pb2.SIDE_SELL: Side.SELL}
SIDE_OUT = {v: k for k, v in SIDE_IN.items()}
TYPE_IN = {
    gateway_pb2.ORDER_TYPE_MARKET: OrderType.MARKET,
    gateway_pb2.ORDER_TYPE_LIMIT: OrderType.LIMIT,
    gateway_pb2.ORDER_TYPE_STOP: OrderType.STOP,
    gateway_pb2.ORDER_TYPE_STOP_LIMIT: OrderType.STOP_LIMIT,
    gateway_pb2.ORDER_TYPE_TAKE_PROFIT: OrderType.TAKE_PROFIT,
    gateway_pb2.ORDER_TYPE_TAKE_PROFIT_LIMIT: OrderType.TAKE_PROFIT_LIMIT,
    gateway_pb2.ORDER_TYPE_LIMIT_MAKER: OrderType.LIMIT_MAKER,
}
TYPE_OUT = {v: k for k, v in TYPE_IN.items()}
TIF_IN = {
    gateway_pb2.TIME_IN_FORCE_GTC: TimeInForce.GTC,
    gateway_pb2.TIME_IN_FORCE_IOC: TimeInForce.IOC,
    gateway_pb2.TIME_IN_FORCE_FOK: TimeInForce.FOK,
}
TIF_OUT = {v: k for k, v in TIF_IN.items()}
STATUS_OUT = {
    OrderStatus.UNKNOWN: gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN,
    OrderStatus.NEW: gateway_pb2.EXCHANGE_ORDER_STATUS_NEW,
    OrderStatus.PARTIALLY_FILLED: gateway_pb2.EXCHANGE_ORDER_STATUS_PARTIALLY_FILLED,
    OrderStatus.FILLED: gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED,
    OrderStatus.CANCELED: gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED,
    OrderStatus.REJECTED: gateway_pb2.EXCHANGE_ORDER_STATUS_REJECTED,
    OrderStatus.EXPIRED: gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED,
}
EXEC_OUT = {
    ExecType.NEW: gateway_pb2.EXECUTION_TYPE_NEW,
    ExecType.TRADE: gateway_pb2.EXECUTION_TYPE_TRADE,
    ExecType.CANCELED: gateway_pb2.EXECUTION_TYPE_CANCELED,
    ExecType.REJECTED: gateway_pb2.EXECUTION_TYPE_REJECTED,
    ExecType.EXPIRED: gateway_pb2.EXECUTION_TYPE_EXPIRED,
}
ANOMALY_OUT = {
    AnomalyKind.TRADE_KEY_CLASH: gateway_pb2.ANOMALY_KIND_TRADE_KEY_CLASH,
    AnomalyKind.EXCHANGE_FORGOT_ORDER: gateway_pb2.ANOMALY_KIND_EXCHANGE_FORGOT_ORDER,
    AnomalyKind.REFUSED_TRANSITION: gateway_pb2.ANOMALY_KIND_REFUSED_TRANSITION,
}


def encode_decimal(value: Decimal | None) -> str:
    """Wire decimal: 8 places ("0.00100000") when exact, else every digit the exchange gave (never rounded)."""
    if value is None:
        return ""
    quantized = value.quantize(QUANTUM, context=CTX)
    if quantized == value:
        return f"{quantized:.{SCALE}f}"
    return format(value, "f")


def encode_order(order: Order) -> gateway_pb2.ExchangeOrder:
    return gateway_pb2.ExchangeOrder(
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id,
        symbol=order.symbol,
        side=SIDE_OUT[order.side],
        type=TYPE_OUT[order.type],
        time_in_force=TIF_OUT[order.time_in_force] if order.time_in_force else gateway_pb2.TIME_IN_FORCE_UNSPECIFIED,
        quantity=encode_decimal(order.quantity),
        price=encode_decimal(order.price),
        stop_price=encode_decimal(order.stop_price),
        status=STATUS_OUT[order.status],
        executed_quantity=encode_decimal(order.executed_qty),
        cumulative_quote_quantity=encode_decimal(order.cum_quote_qty),
        reject_reason=order.reject_reason,
        create_time=ts_from_ms(order.create_time_ms),
        update_time=ts_from_ms(order.update_time_ms),
    )


def encode_execution(e: Execution) -> gateway_service_pb2.StreamExecutionsResponse:
    return gateway_service_pb2.StreamExecutionsResponse(
        execution=gateway_pb2.Execution(
            sequence=e.sequence,
            client_order_id=e.client_order_id,
            exchange_order_id=e.exchange_order_id,
            symbol=e.symbol,
            side=SIDE_OUT[e.side],
            execution_type=EXEC_OUT[e.exec_type],
            order_status=STATUS_OUT[e.order_status],
            trade_id=e.trade_id if e.exec_type is ExecType.TRADE else 0,
            last_quantity=encode_decimal(e.last_qty),
            last_price=encode_decimal(e.last_price),
            last_quote_quantity=encode_decimal(e.last_quote_qty),
            cumulative_quantity=encode_decimal(e.cum_qty),
            cumulative_quote_quantity=encode_decimal(e.cum_quote_qty),
            commission=encode_decimal(e.commission),
            commission_asset=e.commission_asset,
            is_maker=e.is_maker,
            reject_reason=e.reject_reason,
            transaction_time=ts_from_ms(e.transaction_time_ms or e.journal_time_ms),
            journal_time=ts_from_ms(e.journal_time_ms),
        )
    )


def encode_rules(r: SymbolRules) -> gateway_pb2.SymbolRules:
    return gateway_pb2.SymbolRules(
        symbol=r.symbol,
        status=r.status,
        base_asset=r.base_asset,
        quote_asset=r.quote_asset,
        min_price=encode_decimal(r.min_price),
        max_price=encode_decimal(r.max_price),
        tick_size=encode_decimal(r.tick_size),
        min_quantity=encode_decimal(r.min_qty),
        max_quantity=encode_decimal(r.max_qty),
        step_size=encode_decimal(r.step_size),
        market_min_quantity=encode_decimal(r.market_min_qty),
        market_max_quantity=encode_decimal(r.market_max_qty),
        market_step_size=encode_decimal(r.market_step_size),
        min_notional=encode_decimal(r.min_notional),
        max_notional=encode_decimal(r.max_notional),
        apply_min_to_market=r.apply_min_to_market,
        apply_max_to_market=r.apply_max_to_market,
        bid_multiplier_up=encode_decimal(r.bid_multiplier_up),
        bid_multiplier_down=encode_decimal(r.bid_multiplier_down),
        ask_multiplier_up=encode_decimal(r.ask_multiplier_up),
        ask_multiplier_down=encode_decimal(r.ask_multiplier_down),
        max_num_orders=r.max_num_orders,
        max_num_algo_orders=r.max_num_algo_orders,
        order_types=list(r.order_types),
        base_asset_precision=r.base_asset_precision,
        quote_asset_precision=r.quote_asset_precision,
        trading=r.trading,
        allowed_types=sorted(TYPE_OUT[t] for t in r.allowed_types),
    )


def encode_balance(b: Balance) -> gateway_pb2.AccountBalance:
    return gateway_pb2.AccountBalance(asset=b.asset, free=encode_decimal(b.free), locked=encode_decimal(b.locked))


def encode_foreign_order(f: ForeignOrder) -> gateway_pb2.ForeignOrder:
    return gateway_pb2.ForeignOrder(
        symbol=f.symbol,
        client_order_id=f.client_order_id,
        exchange_order_id=f.exchange_order_id,
        side=SIDE_OUT[f.side] if f.side else gateway_pb2.SIDE_UNSPECIFIED,
        type=f.type,
        price=encode_decimal(f.price),
        quantity=encode_decimal(f.quantity),
        executed_quantity=encode_decimal(f.executed_qty),
        status=STATUS_OUT[f.status],
        open=f.is_open,
        first_seen_time=ts_from_ms(f.first_seen_ms),
        last_seen_time=ts_from_ms(f.last_seen_ms),
        cancel_time=ts_from_ms(f.cancel_time_ms or None),
        cancel_error=f.cancel_error,
    )


def encode_anomaly(a: Anomaly) -> gateway_pb2.Anomaly:
    return gateway_pb2.Anomaly(
        kind=ANOMALY_OUT[a.kind],
        symbol=a.symbol,
        client_order_id=a.client_order_id,
        trade_id=a.trade_id,
        detail=a.detail,
        first_seen_time=ts_from_ms(a.first_seen_ms),
    )
