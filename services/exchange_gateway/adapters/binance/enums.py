"""Binance's enum names mapped to the domain's and back (``ext_to_int`` / ``int_to_ext``)."""

from __future__ import annotations

from services.exchange_gateway.domain.model import ExecType, OrderStatus, OrderType, Side, TimeInForce

SIDE_INT_TO_EXT = {Side.BUY: "BUY", Side.SELL: "SELL"}
SIDE_EXT_TO_INT = {v: k for k, v in SIDE_INT_TO_EXT.items()}

# The gateway's STOP is Binance's STOP_LOSS (a market order once triggered), STOP_LIMIT is
# STOP_LOSS_LIMIT; TAKE_PROFIT, TAKE_PROFIT_LIMIT and LIMIT_MAKER keep Binance's names.
ORDER_TYPE_INT_TO_EXT = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP: "STOP_LOSS",
    OrderType.STOP_LIMIT: "STOP_LOSS_LIMIT",
    OrderType.TAKE_PROFIT: "TAKE_PROFIT",
    OrderType.TAKE_PROFIT_LIMIT: "TAKE_PROFIT_LIMIT",
    OrderType.LIMIT_MAKER: "LIMIT_MAKER",
}
ORDER_TYPE_EXT_TO_INT = {v: k for k, v in ORDER_TYPE_INT_TO_EXT.items()}

TIF_INT_TO_EXT = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}

ORDER_STATUS_EXT_TO_INT = {
    "NEW": OrderStatus.NEW,
    "PENDING_NEW": OrderStatus.NEW,  # order lists only; working as far as we are concerned
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "PENDING_CANCEL": OrderStatus.NEW,  # "currently unused"; still working until it is CANCELED
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,  # self-trade prevention
}

EXEC_TYPE_EXT_TO_INT = {
    "NEW": ExecType.NEW,
    "TRADE": ExecType.TRADE,
    "CANCELED": ExecType.CANCELED,
    "REJECTED": ExecType.REJECTED,
    "EXPIRED": ExecType.EXPIRED,
    "TRADE_PREVENTION": ExecType.EXPIRED,  # self-trade prevention expired (part of) the order
}


def order_status(ext: str) -> OrderStatus:
    """Domain status of a Binance order status (unknown names count as NEW: still working)."""
    return ORDER_STATUS_EXT_TO_INT.get(ext, OrderStatus.NEW)
