"""How an order moves when the exchange tells us something, as pure functions.

Each function returns a ``Change``: the order after the event and the execution to journal. The journal
deduplicates executions (TRADE by (symbol, trade id), other types by (client order id, type)),
and only applies the order change when the execution is new, so every path that learns a fact
(user data stream, order response, REST reconciliation) can call these without double counting.

Cumulative figures in an execution are the journal's own running sums, so that a consumer that
adds up the TRADE executions always gets ``cum_qty``; FILLED is reported exactly when the
journaled trades reach the order quantity.

The table in ``model.TRANSITIONS`` decides every change of status. A move it does not allow is
refused: the order keeps its status, nothing is journaled, and the change carries a
REFUSED_TRANSITION anomaly. Fills are the one exception: a refused trade is still journaled with
its money (the cumulative figures grow) and the status left as it was. A report of the status the
order already has (NEW, or the same end, again) is not a move: its execution is journaled, and the
journal's dedup key makes the repeat a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.exchange_gateway.domain.model import (
    FINAL_EXEC_STATUS,
    Anomaly,
    AnomalyKind,
    ExecType,
    Execution,
    Fill,
    Order,
    OrderStatus,
    can_transition,
)


@dataclass(frozen=True, slots=True)
class Change:
    """An event applied to an order: the order after it, the execution to journal, a refused move.

    ``execution`` is None when the table refused the move and the event carries no money.
    """

    order: Order
    execution: Execution | None
    refused: Anomaly | None = None


def refusal(order: Order, exec_type: ExecType, target: OrderStatus, *, trade_id: int = 0, now_ms: int) -> Anomaly:
    """The REFUSED_TRANSITION anomaly of a report that would move ``order`` to ``target``."""
    return Anomaly(
        kind=AnomalyKind.REFUSED_TRANSITION,
        symbol=order.symbol,
        client_order_id=order.client_order_id,
        trade_id=trade_id,
        journaled=f"status={order.status.value}",
        received=f"{exec_type.value} (status {target.value})",
        first_seen_ms=now_ms,
    )


def foreign_status(known: OrderStatus, seen: OrderStatus) -> OrderStatus:
    """A foreign order's status after a report: ``seen`` where the table allows the move, else ``known``.

    Foreign orders are learnt of by polling as well as from the stream, so a report older than what
    is known (a late open-orders answer about an order since filled) is expected, not an anomaly.
    """
    return seen if can_transition(known, seen) else known


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


def accepted(order: Order, *, exchange_order_id: int, time_ms: int, now_ms: int) -> Change:
    """The exchange accepted the order: status NEW."""
    status = OrderStatus.NEW
    if order.status is not status and not can_transition(order.status, status):
        return Change(order, None, refusal(order, ExecType.NEW, status, now_ms=now_ms))
    updated = order.with_changes(
        status=status,
        exchange_order_id=exchange_order_id or order.exchange_order_id,
        reported_new=True,
        update_time_ms=now_ms,
    )
    return Change(updated, _base(updated, ExecType.NEW, status, time_ms=time_ms, now_ms=now_ms))


def traded(order: Order, fill: Fill, *, exchange_order_id: int, now_ms: int) -> Change:
    """A trade of the order: cumulative figures grow; FILLED once they reach the order quantity.

    A trade is always a move (PARTIALLY_FILLED may follow itself, nothing follows FILLED); when the
    table refuses it, the trade is journaled all the same, with the status unchanged.
    """
    cum_qty = order.executed_qty + fill.quantity
    cum_quote = order.cum_quote_qty + fill.quote_quantity
    candidate = OrderStatus.FILLED if cum_qty >= order.quantity else OrderStatus.PARTIALLY_FILLED
    refused = None
    status = candidate
    if not can_transition(order.status, candidate):
        refused = refusal(order, ExecType.TRADE, candidate, trade_id=fill.trade_id, now_ms=now_ms)
        status = order.status
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
    return Change(updated, execution, refused)


def ended(
    order: Order,
    exec_type: ExecType,
    *,
    reason: str,
    time_ms: int,
    now_ms: int,
    exchange_order_id: int = 0,
) -> Change:
    """The order ended: CANCELED, EXPIRED or REJECTED (with a reason for the last two)."""
    status = FINAL_EXEC_STATUS[exec_type]
    if order.status is not status and not can_transition(order.status, status):
        return Change(order, None, refusal(order, exec_type, status, now_ms=now_ms))
    updated = order.with_changes(
        status=status,
        exchange_order_id=exchange_order_id or order.exchange_order_id,
        reject_reason=reason if exec_type is not ExecType.CANCELED else order.reject_reason,
        update_time_ms=now_ms,
    )
    execution = replace(_base(updated, exec_type, status, time_ms=time_ms, now_ms=now_ms), reject_reason=reason)
    return Change(updated, execution)
