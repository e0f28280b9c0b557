"""Proto <-> domain for trading.order.v1: enums, the Order and Fill messages, PlaceOrder requests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from services.order_service.domain.model import Fill, Order, OrderType, SettleTrade, Side, TimeInForce, UserLimits
from services.order_service.domain.placement import NewOrderRequest
from services.order_service.domain.reconciliation import ReconciliationStatus
from services.order_service.domain.states import Status
from services.order_service.service.ports import ParkedEffect
from services.order_service.service.reconciliation import ReconciliationReport
from shared.errors import InvalidArgument
from shared.money import fmt, parse_decimal
from shared.proto_time import ms_from_ts, ts_from_ms
from trading.order.v1 import order_pb2, order_service_pb2

SIDE_IN = {order_pb2.ORDER_SIDE_BUY: Side.BUY, order_pb2.ORDER_SIDE_SELL: Side.SELL}
SIDE_OUT = {v: k for k, v in SIDE_IN.items()}
TYPE_IN = {
    order_pb2.ORDER_TYPE_MARKET: OrderType.MARKET,
    order_pb2.ORDER_TYPE_LIMIT: OrderType.LIMIT,
    order_pb2.ORDER_TYPE_STOP: OrderType.STOP,
    order_pb2.ORDER_TYPE_STOP_LIMIT: OrderType.STOP_LIMIT,
    order_pb2.ORDER_TYPE_TAKE_PROFIT: OrderType.TAKE_PROFIT,
    order_pb2.ORDER_TYPE_TAKE_PROFIT_LIMIT: OrderType.TAKE_PROFIT_LIMIT,
    order_pb2.ORDER_TYPE_LIMIT_MAKER: OrderType.LIMIT_MAKER,
}
TYPE_OUT = {v: k for k, v in TYPE_IN.items()}
TIF_IN = {
    order_pb2.TIME_IN_FORCE_GTC: TimeInForce.GTC,
    order_pb2.TIME_IN_FORCE_IOC: TimeInForce.IOC,
    order_pb2.TIME_IN_FORCE_FOK: TimeInForce.FOK,
}
TIF_OUT = {v: k for k, v in TIF_IN.items()}
TIF_OUT[TimeInForce.NONE] = order_pb2.TIME_IN_FORCE_UNSPECIFIED
STATUS_OUT = {
    Status.PENDING: order_pb2.ORDER_STATUS_PENDING,
    Status.PARTIALLY_FILLED: order_pb2.ORDER_STATUS_PARTIALLY_FILLED,
    Status.FILLED: order_pb2.ORDER_STATUS_FILLED,
    Status.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
    Status.REJECTED: order_pb2.ORDER_STATUS_REJECTED,
    Status.EXPIRED: order_pb2.ORDER_STATUS_EXPIRED,
}
STATUS_IN = {v: k for k, v in STATUS_OUT.items()}

_N = TypeVar("_N", bound=int)
_V = TypeVar("_V")


def _enum(value: _N, table: Mapping[_N, _V], field: str) -> _V | None:
    if value == 0:
        return None
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(field, f"unknown value {value}") from None


def decode_place(request: order_service_pb2.PlaceOrderRequest) -> NewOrderRequest:
    """A PlaceOrder request as the use case takes it (unknown enum numbers are INVALID_ARGUMENT)."""
    expire: int | None = None
    if request.HasField("expire_time"):
        expire = ms_from_ts(request.expire_time) or 0  # a zero timestamp is a time in the past
    return NewOrderRequest(
        symbol=request.symbol,
        side=_enum(request.side, SIDE_IN, "side"),
        type=_enum(request.type, TYPE_IN, "type"),
        quantity=request.quantity,
        price=request.price,
        stop_price=request.stop_price,
        time_in_force=_enum(request.time_in_force, TIF_IN, "time_in_force"),
        expire_time_ms=expire,
        client_order_id=request.client_order_id,
    )


def decode_status(value: order_pb2.OrderStatus.ValueType) -> Status | None:
    """A ListOrders status filter (UNSPECIFIED: none)."""
    status: Status | None = _enum(value, STATUS_IN, "status")
    return status


def _ts(ms: int) -> Timestamp:
    ts = ts_from_ms(ms)
    assert ts is not None
    return ts


def encode_order(order: Order) -> order_pb2.Order:
    """The Order message; decimals with 8 places."""
    message = order_pb2.Order(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        user_id=order.user_id,
        symbol=order.symbol,
        side=SIDE_OUT[order.side],
        type=TYPE_OUT[order.type],
        status=STATUS_OUT[order.status],
        quantity=fmt(order.quantity),
        price=fmt(order.price),
        stop_price=fmt(order.stop_price),
        time_in_force=TIF_OUT[order.time_in_force],
        filled_quantity=fmt(order.filled_quantity),
        remaining_quantity=fmt(order.remaining_quantity),
        average_price=fmt(order.average_price),
        commission=fmt(order.commission),
        commission_asset=order.commission_asset,
        reject_reason=order.reject_reason if order.status is Status.REJECTED else "",
        expire_reason=order.reject_reason if order.status is Status.EXPIRED else "",
        exchange_order_id=order.exchange_order_id,
        exchange_order_number=int(order.exchange_order_id or 0),
        create_time=_ts(order.create_time_ms),
        update_time=_ts(order.update_time_ms),
        filled_quote_quantity=fmt(order.filled_quote_quantity),
        cancel_requested=order.cancel_requested,
    )
    if order.expire_time_ms is not None:
        message.expire_time.CopyFrom(_ts(order.expire_time_ms))
    return message


def encode_fill(fill: Fill) -> order_pb2.Fill:
    """The Fill message."""
    return order_pb2.Fill(
        fill_id=fill.fill_id,
        order_id=fill.order_id,
        symbol=fill.symbol,
        side=SIDE_OUT[fill.side],
        price=fmt(fill.price),
        quantity=fmt(fill.quantity),
        quote_quantity=fmt(fill.quote_quantity),
        commission=fmt(fill.commission),
        commission_asset=fill.commission_asset,
        is_maker=fill.is_maker,
        trade_time=_ts(fill.trade_time_ms),
    )


def encode_parked(parked: ParkedEffect) -> order_service_pb2.ParkedEffect:
    """A parked outbox entry as the admin sees it."""
    effect = parked.entry.effect
    if isinstance(effect, SettleTrade):
        kind, key, user_id = "SETTLE_TRADE", effect.trade_id, effect.user_id
    else:
        kind, key, user_id = "RELEASE_FUNDS", effect.release_id, ""
    return order_service_pb2.ParkedEffect(
        effect_id=parked.entry.id,
        order_id=effect.order_id,
        user_id=user_id,
        kind=kind,
        key=key,
        reason=parked.reason,
        attempts=parked.attempts,
        park_time=ts_from_ms(parked.parked_ms),
    )


RECONCILIATION_STATUS_OUT = {
    ReconciliationStatus.BALANCED: order_service_pb2.RECONCILIATION_STATUS_BALANCED,
    ReconciliationStatus.EXCESS: order_service_pb2.RECONCILIATION_STATUS_EXCESS,
    ReconciliationStatus.SHORTFALL: order_service_pb2.RECONCILIATION_STATUS_SHORTFALL,
}


def encode_report(report: ReconciliationReport) -> order_service_pb2.ReconciliationReport:
    """The client-money reconciliation report."""
    return order_service_pb2.ReconciliationReport(
        report_time=ts_from_ms(report.report_ms),
        status=RECONCILIATION_STATUS_OUT[report.status],
        assets=[
            order_service_pb2.AssetReconciliation(
                asset=line.asset,
                exchange_total=fmt(line.exchange_total),
                exchange_free=fmt(line.exchange_free),
                exchange_locked=fmt(line.exchange_locked),
                users_total=fmt(line.users_total),
                house_total=fmt(line.house_total),
                in_flight=fmt(line.in_flight),
                difference=fmt(line.difference),
                status=RECONCILIATION_STATUS_OUT[line.status],
            )
            for line in report.assets
        ],
        foreign_orders=[
            order_service_pb2.ForeignOrder(
                symbol=o.symbol,
                client_order_id=o.client_order_id,
                exchange_order_id=o.exchange_order_id,
                side=o.side,
                type=o.type,
                price=fmt(o.price),
                quantity=fmt(o.quantity),
                executed_quantity=fmt(o.executed_quantity),
                status=o.status,
                open=o.open,
                first_seen_time=ts_from_ms(o.first_seen_ms),
            )
            for o in report.foreign_orders
        ],
        anomalies=[
            order_service_pb2.ExchangeAnomaly(
                kind=a.kind,
                symbol=a.symbol,
                client_order_id=a.client_order_id,
                trade_id=a.trade_id,
                detail=a.detail,
                first_seen_time=ts_from_ms(a.first_seen_ms),
            )
            for a in report.anomalies
        ],
        parked_effects=[encode_parked(p) for p in report.parked],
    )


USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_ORDERS_PER_SECOND = Decimal(1000)
MAX_OPEN_ORDERS = 100_000


def check_user_id(user_id: str) -> str:
    """A user id as the user service makes them; INVALID_ARGUMENT naming the field otherwise."""
    if not user_id:
        raise InvalidArgument("user_id", "is required")
    if not USER_ID.match(user_id):
        raise InvalidArgument("user_id", "must be a user id such as usr_01J9...")
    return user_id


def decode_limits(orders_per_second: str, max_open_orders: int) -> UserLimits | None:
    """SetUserLimits' values; None (both empty) means "back to the defaults"."""
    if not orders_per_second and max_open_orders == 0:
        return None
    if not orders_per_second:
        raise InvalidArgument("orders_per_second", "is required with max_open_orders (empty both for the defaults)")
    rate = parse_decimal(orders_per_second, "orders_per_second")
    if rate <= 0 or rate > MAX_ORDERS_PER_SECOND:
        raise InvalidArgument("orders_per_second", f"must be above 0 and at most {MAX_ORDERS_PER_SECOND}")
    if not 1 <= max_open_orders <= MAX_OPEN_ORDERS:
        raise InvalidArgument("max_open_orders", f"must be between 1 and {MAX_OPEN_ORDERS}")
    return UserLimits(orders_per_second=rate, max_open_orders=max_open_orders)
