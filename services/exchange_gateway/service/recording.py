"""Journal transactions: each function runs inside one journal transaction (``JournalTx``).

Every path that learns something about an order (the order response, the user data stream, a
query, open orders, myTrades) ends up here, and each fact is journaled once: the journal's dedup
key makes a second report of the same trade or the same NEW/CANCELED/EXPIRED/REJECTED a no-op,
and the order row changes only when an execution is new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from services.exchange_gateway.domain import lifecycle
from services.exchange_gateway.domain.model import (
    ExchangeEvent,
    ExecType,
    Execution,
    Fill,
    Order,
    OrderSnapshot,
    OrderStatus,
    trade_key,
)
from services.exchange_gateway.service.ports import JournalTx


@dataclass(frozen=True)
class Applied:
    """The order after a transaction, and whether the journal now agrees with the exchange."""

    order: Order | None
    complete: bool = True


def _journal(tx: JournalTx, change: tuple[Order, Execution]) -> Order:
    updated, execution = change
    if tx.add_execution(execution) is None:
        return tx.get_order(updated.client_order_id) or updated
    tx.put_order(updated)
    return updated


def _ensure_new(tx: JournalTx, order: Order, *, exchange_order_id: int, time_ms: int, now_ms: int) -> Order:
    """Journal NEW before anything else happens to an accepted order (consumers always see NEW first)."""
    if exchange_order_id and order.exchange_order_id != exchange_order_id:
        order = order.with_changes(exchange_order_id=exchange_order_id)
        tx.put_order(order)
    if order.reported_new:
        return order
    order = _journal(tx, lifecycle.accepted(order, exchange_order_id=exchange_order_id, time_ms=time_ms, now_ms=now_ms))
    if not order.reported_new:  # NEW was already journaled (by an earlier run): remember it
        order = order.with_changes(reported_new=True)
        tx.put_order(order)
    return order


def insert_order(tx: JournalTx, order: Order) -> tuple[Order, bool]:
    """Journal a new order before it is sent; an existing id returns the journaled order instead."""
    existing = tx.get_order(order.client_order_id)
    if existing is not None:
        return existing, False
    tx.put_order(order)
    return order, True


def set_request_time(tx: JournalTx, client_order_id: str, request_time_ms: int) -> Order | None:
    """Record the timestamp of a resend (after -1021): the order may appear until it plus recvWindow."""
    order = tx.get_order(client_order_id)
    if order is None:
        return None
    order = order.with_changes(request_time_ms=max(order.request_time_ms, request_time_ms))
    tx.put_order(order)
    return order


def request_cancel(tx: JournalTx, client_order_id: str, now_ms: int) -> Order | None:
    """Remember that a cancel was asked for, so that reconciliation finishes it if this attempt is lost."""
    order = tx.get_order(client_order_id)
    if order is None or order.cancel_requested or order.is_final:
        return order
    order = order.with_changes(cancel_requested=True, update_time_ms=now_ms)
    tx.put_order(order)
    return order


def reject(tx: JournalTx, client_order_id: str, reason: str, *, now_ms: int, time_ms: int = 0) -> Order | None:
    """A definite refusal, or an unknown outcome proven never placed: REJECTED with a reason."""
    order = tx.get_order(client_order_id)
    if order is None or order.is_final:
        return order
    return _journal(
        tx, lifecycle.ended(order, ExecType.REJECTED, reason=reason, time_ms=time_ms or now_ms, now_ms=now_ms)
    )


def apply_snapshot(
    tx: JournalTx, snap: OrderSnapshot, trades: list[Fill] | None, *, now_ms: int, client_order_id: str = ""
) -> Applied:
    """Bring the journal up to what the exchange reports for an order.

    ``trades`` (from myTrades) or else the snapshot's own fills are journaled first (deduplicated,
    in trade id order), then the final event. A CANCELED or EXPIRED is only journaled when the
    journaled trades account for the exchange's executed quantity, so that a consumer never sees a
    trade after the order ended; otherwise the result is ``complete=False`` and the caller fetches
    the missing trades.
    """
    cid = client_order_id or snap.client_order_id
    order = tx.get_order(cid)
    if order is None:
        return Applied(None)
    if snap.status is OrderStatus.REJECTED:
        return Applied(
            _journal(
                tx,
                lifecycle.ended(
                    order, ExecType.REJECTED, reason=snap.reason or "REJECTED", time_ms=snap.time_ms, now_ms=now_ms
                ),
            )
        )
    order = _ensure_new(tx, order, exchange_order_id=snap.exchange_order_id, time_ms=snap.time_ms, now_ms=now_ms)
    fills = trades if trades is not None else list(snap.fills)
    for fill in sorted(fills, key=lambda f: f.trade_id):
        order = _journal(tx, lifecycle.traded(order, fill, exchange_order_id=snap.exchange_order_id, now_ms=now_ms))
    complete = order.executed_qty >= snap.executed_qty
    if complete and snap.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
        exec_type = ExecType.CANCELED if snap.status is OrderStatus.CANCELED else ExecType.EXPIRED
        reason = "" if exec_type is ExecType.CANCELED else (snap.reason or "EXPIRED")
        order = _journal(tx, lifecycle.ended(order, exec_type, reason=reason, time_ms=snap.time_ms, now_ms=now_ms))
    return Applied(order, complete)


def apply_event(tx: JournalTx, event: ExchangeEvent, *, now_ms: int) -> Applied:
    """Journal one user data stream event; ``complete=False`` means trades are missing (a gap)."""
    order = tx.get_order(event.client_order_id)
    if order is None or order.symbol != event.symbol:
        return Applied(None)
    if event.exec_type is ExecType.REJECTED:
        return Applied(
            _journal(
                tx,
                lifecycle.ended(
                    order,
                    ExecType.REJECTED,
                    reason=event.reason or "REJECTED",
                    time_ms=event.time_ms,
                    now_ms=now_ms,
                    exchange_order_id=event.exchange_order_id,
                ),
            )
        )
    order = _ensure_new(tx, order, exchange_order_id=event.exchange_order_id, time_ms=event.time_ms, now_ms=now_ms)
    if event.exec_type is ExecType.TRADE and event.fill is not None:
        order = _journal(
            tx, lifecycle.traded(order, event.fill, exchange_order_id=event.exchange_order_id, now_ms=now_ms)
        )
        return Applied(order, order.executed_qty >= event.cum_qty)
    if event.exec_type in (ExecType.CANCELED, ExecType.EXPIRED):
        if order.executed_qty < event.cum_qty:
            return Applied(order, False)  # a trade is missing: the sync journals it, then the end
        reason = "" if event.exec_type is ExecType.CANCELED else (event.reason or "EXPIRED")
        order = _journal(
            tx, lifecycle.ended(order, event.exec_type, reason=reason, time_ms=event.time_ms, now_ms=now_ms)
        )
    return Applied(order)


def covers(order: Order, snap: OrderSnapshot) -> bool:
    """Whether the journaled ``order`` already reflects everything ``snap`` says (nothing to write)."""
    if snap.status is OrderStatus.REJECTED:
        return order.status is OrderStatus.REJECTED
    if not order.reported_new or order.exchange_order_id != snap.exchange_order_id:
        return False
    if order.executed_qty < snap.executed_qty:
        return False
    if snap.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
        return order.is_final
    return True


def already_known(order: Order, event: ExchangeEvent, seen: Callable[[str], bool]) -> bool:
    """Whether ``event`` is already journaled (checked against the committed order and recent keys)."""
    if event.exec_type is ExecType.TRADE:
        return event.fill is not None and seen(trade_key(event.symbol, event.fill.trade_id))
    if event.exec_type is ExecType.NEW:
        return order.reported_new
    return order.is_final


def missing(order: Order, executed: Decimal) -> bool:
    """Whether the exchange reports more executed quantity than the journal has trades for."""
    return executed > order.executed_qty
