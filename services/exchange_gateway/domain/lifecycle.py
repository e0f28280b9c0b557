"""How an order moves when the exchange tells us something, as pure functions.

Each function returns the order after the event and the execution to journal. The journal
deduplicates executions (TRADE by (symbol, trade id), other types by (client order id, type)),
and only applies the order change when the execution is new, so every path that learns a fact
(user data stream, order response, REST reconciliation) can call these without double counting.

Cumulative figures in an execution are the journal's own running sums, so that a consumer that
adds up the TRADE executions always gets ``cum_qty``; FILLED is reported exactly when the
journaled trades reach the order quantity.
"""

from __future__ import annotations

from dataclasses import replace

from services.exchange_gateway.domain.model import (
    FINAL_EXEC_STATUS,
    ExecType,
    Execution,
    Fill,
    Order,
    OrderStatus,
    rank,
)


def advance(current: OrderStatus, candidate: OrderStatus) -> OrderStatus:
    """The status after learning ``candidate``: never backwards, and a final status sticks."""
    if rank(current) == 3:
        return current
    return candidate if rank(candidate) >= rank(current) else current


def _base(order: Order, exec_type: ExecType, status: OrderStatus, *, time_ms: int, now_ms: int) -> Execution:
    return Execution(
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id,
        symbol=order.symbol,
        side=order.side,
        exec_type=exec_type,
        order_status=status,
        cum_qty=order.executed_qty,
        cum_quote_qty=order.cum_quote_qty,
        transaction_time_ms=time_ms,
        journal_time_ms=now_ms,
    )


def accepted(order: Order, *, exchange_order_id: int, time_ms: int, now_ms: int) -> tuple[Order, Execution]:
    """The exchange accepted the order: status NEW (unless it is already further along)."""
    status = advance(order.status, OrderStatus.NEW)
    updated = order.with_changes(
        status=status,
        exchange_order_id=exchange_order_id or order.exchange_order_id,
        reported_new=True,
        update_time_ms=now_ms,
    )
    return updated, _base(updated, ExecType.NEW, status, time_ms=time_ms, now_ms=now_ms)


def traded(order: Order, fill: Fill, *, exchange_order_id: int, now_ms: int) -> tuple[Order, Execution]:
    """A trade of the order: cumulative figures grow; FILLED once they reach the order quantity."""
    cum_qty = order.executed_qty + fill.quantity
    cum_quote = order.cum_quote_qty + fill.quote_quantity
    candidate = OrderStatus.FILLED if cum_qty >= order.quantity else OrderStatus.PARTIALLY_FILLED
    status = advance(order.status, candidate)
    updated = order.with_changes(
        status=status,
        exchange_order_id=exchange_order_id or order.exchange_order_id,
        executed_qty=cum_qty,
        cum_quote_qty=cum_quote,
        update_time_ms=now_ms,
    )
    execution = Execution(
        client_order_id=order.client_order_id,
        exchange_order_id=updated.exchange_order_id,
        symbol=order.symbol,
        side=order.side,
        exec_type=ExecType.TRADE,
        order_status=status,
        trade_id=fill.trade_id,
        last_qty=fill.quantity,
        last_price=fill.price,
        last_quote_qty=fill.quote_quantity,
        cum_qty=cum_qty,
        cum_quote_qty=cum_quote,
        commission=fill.commission,
        commission_asset=fill.commission_asset,
        is_maker=fill.is_maker,
        transaction_time_ms=fill.time_ms,
        journal_time_ms=now_ms,
    )
    return updated, execution


def ended(
    order: Order,
    exec_type: ExecType,
    *,
    reason: str,
    time_ms: int,
    now_ms: int,
    exchange_order_id: int = 0,
) -> tuple[Order, Execution]:
    """The order ended: CANCELED, EXPIRED or REJECTED (with a reason for the last two)."""
    status = advance(order.status, FINAL_EXEC_STATUS[exec_type])
    updated = order.with_changes(
        status=status,
        exchange_order_id=exchange_order_id or order.exchange_order_id,
        reject_reason=reason if exec_type is not ExecType.CANCELED else order.reject_reason,
        update_time_ms=now_ms,
    )
    execution = replace(_base(updated, exec_type, status, time_ms=time_ms, now_ms=now_ms), reject_reason=reason)
    return updated, execution
