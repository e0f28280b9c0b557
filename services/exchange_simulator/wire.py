"""Binance's JSON shapes for orders, trades, the account and user data stream events (numbers as 8-decimal strings)."""

from __future__ import annotations

from typing import Any

from services.exchange_simulator.matching import (
    STOP_TYPES,
    AccountPosition,
    Event,
    ExecutionReport,
    Order,
    Trade,
)
from services.exchange_simulator.symbols import fmt8

ZERO_8 = "0.00000000"
STP_MODE = "EXPIRE_MAKER"


def order_ack(order: Order, transact_time: int) -> dict[str, Any]:
    """newOrderRespType=ACK."""
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": transact_time,
    }


def _state(order: Order) -> dict[str, Any]:
    """Prices, quantities, status and kind of an order, as the RESULT answer and a cancel's answer give them."""
    return {
        "price": fmt8(order.price),
        "origQty": fmt8(order.quantity),
        "executedQty": fmt8(order.executed_qty),
        "origQuoteOrderQty": fmt8(order.quote_order_qty),
        "cummulativeQuoteQty": fmt8(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
    }


def order_result(order: Order, transact_time: int) -> dict[str, Any]:
    """newOrderRespType=RESULT."""
    body = order_ack(order, transact_time)
    body.update(_state(order))
    body["workingTime"] = order.working_time
    body["selfTradePreventionMode"] = STP_MODE
    if order.type in STOP_TYPES:
        body["stopPrice"] = fmt8(order.stop_price)
    if order.status == "EXPIRED":
        body["expiryReason"] = order.expiry_reason
    return body


def fill(trade: Trade) -> dict[str, Any]:
    return {
        "price": fmt8(trade.price),
        "qty": fmt8(trade.qty),
        "commission": fmt8(trade.commission),
        "commissionAsset": trade.commission_asset,
        "tradeId": trade.id,
    }


def order_full(order: Order, transact_time: int) -> dict[str, Any]:
    """newOrderRespType=FULL: RESULT plus the fills that happened while placing."""
    body = order_result(order, transact_time)
    body["fills"] = [fill(trade) for trade in order.trades]
    return body


def order_query(order: Order) -> dict[str, Any]:
    """GET /api/v3/order, openOrders and allOrders entries."""
    body: dict[str, Any] = {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": fmt8(order.price),
        "origQty": fmt8(order.quantity),
        "executedQty": fmt8(order.executed_qty),
        "cummulativeQuoteQty": fmt8(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "stopPrice": fmt8(order.stop_price),
        "icebergQty": ZERO_8,
        "time": order.time,
        "updateTime": order.update_time,
        "isWorking": order.is_working,
        "workingTime": order.working_time,
        "origQuoteOrderQty": fmt8(order.quote_order_qty),
        "selfTradePreventionMode": STP_MODE,
    }
    if order.status == "EXPIRED":
        body["expiryReason"] = order.expiry_reason
    return body


def order_cancel(order: Order, cancel_client_order_id: str, transact_time: int) -> dict[str, Any]:
    """DELETE /api/v3/order (and each entry of DELETE /api/v3/openOrders)."""
    body: dict[str, Any] = {
        "symbol": order.symbol,
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_order_id,
        "transactTime": transact_time,
        **_state(order),
        "selfTradePreventionMode": STP_MODE,
    }
    if order.type in STOP_TYPES:
        body["stopPrice"] = fmt8(order.stop_price)
    return body


def my_trade(trade: Trade) -> dict[str, Any]:
    """GET /api/v3/myTrades entries."""
    return {
        "symbol": trade.symbol,
        "id": trade.id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": fmt8(trade.price),
        "qty": fmt8(trade.qty),
        "quoteQty": fmt8(trade.quote_qty),
        "commission": fmt8(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time,
        "isBuyer": trade.is_buyer,
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def execution_report(event: ExecutionReport) -> dict[str, Any]:
    """The ``executionReport`` event, with Binance's full field set."""
    order = event.order
    body: dict[str, Any] = {
        "e": "executionReport",
        "E": event.event_time,
        "s": order.symbol,
        "c": event.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": fmt8(order.quantity),
        "p": fmt8(order.price),
        "P": fmt8(order.stop_price),
        "F": ZERO_8,
        "g": -1,
        "C": event.orig_client_order_id,
        "x": event.execution_type,
        "X": event.status,
        "r": "NONE",
        "i": order.order_id,
        "l": fmt8(event.last_qty),
        "z": fmt8(event.cum_qty),
        "L": fmt8(event.last_price),
        "n": fmt8(event.commission) if event.commission_asset is not None else "0",
        "N": event.commission_asset,
        "T": event.event_time,
        "t": event.trade_id,
        "I": event.execution_id,
        "w": event.is_working,
        "m": event.is_maker,
        "M": False,
        "O": order.time,
        "Z": fmt8(event.cum_quote),
        "Y": fmt8(event.last_quote),
        "Q": fmt8(order.quote_order_qty),
        "W": event.working_time,
        "V": STP_MODE,
    }
    if event.expiry_reason is not None:
        body["eR"] = event.expiry_reason
    return body


def account_position(event: AccountPosition) -> dict[str, Any]:
    """The ``outboundAccountPosition`` event."""
    return {
        "e": "outboundAccountPosition",
        "E": event.event_time,
        "u": event.event_time,
        "B": [{"a": asset, "f": fmt8(free), "l": fmt8(locked)} for asset, free, locked in event.balances],
    }


def event_payload(event: Event) -> dict[str, Any]:
    """The user data stream form of an engine event."""
    if isinstance(event, ExecutionReport):
        return execution_report(event)
    return account_position(event)
