"""Journal transactions: each function runs inside one journal transaction (``JournalTx``).

Every path that learns something about an order (the order response, the user data stream, a
query, open orders, myTrades) ends up here, and each fact is journaled once: the journal's dedup
key makes a second report of the same trade or the same NEW/CANCELED/EXPIRED/REJECTED a no-op,
and the order row changes only when an execution is new.

A trade key (symbol, trade id) that comes again with other content (another order, price,
quantity or time: an exchange that was reset and counts from 1 again) is not the same trade: it is
recorded as a TRADE_KEY_CLASH anomaly and not journaled, so the consumer never settles a trade
whose identity is in doubt and the order stays short of that trade. A report that would move an
order in a way the state table refuses is recorded as a REFUSED_TRANSITION anomaly; the order keeps
its status, and only a trade's execution is journaled (its money counts). Reports about orders the
gateway did not place update the foreign-order record and are never executions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from services.exchange_gateway.domain import lifecycle
from services.exchange_gateway.domain.model import (
    OPEN_STATUSES,
    Anomaly,
    AnomalyKind,
    ExchangeEvent,
    ExecType,
    Execution,
    Fill,
    ForeignOrder,
    Order,
    OrderSnapshot,
    OrderStatus,
    TradeIdentity,
    trade_key,
)
from services.exchange_gateway.service.ports import JournalTx


@dataclass(frozen=True)
class Applied:
    """The order after a transaction, and whether the journal now agrees with the exchange."""

    order: Order | None
    complete: bool = True


def _journal(tx: JournalTx, change: lifecycle.Change) -> Order:
    updated, execution = change.order, change.execution
    if execution is None:
        if change.refused is not None:
            tx.add_anomaly(change.refused)
        return updated
    if tx.add_execution(execution) is None:
        if execution.exec_type is ExecType.TRADE:
            _check_trade_key(tx, execution)
        return tx.get_order(updated.client_order_id) or updated
    if change.refused is not None:  # a trade journaled against a refused move: recorded once, with it
        tx.add_anomaly(change.refused)
    tx.put_order(updated)
    return updated


def _check_trade_key(tx: JournalTx, execution: Execution) -> None:
    """A trade key already journaled: an identical repeat is a duplicate, other content an anomaly."""
    journaled = tx.journaled(execution.dedup_key)
    if journaled is None or not journaled.trade_identity.differences(execution.trade_identity):
        return
    tx.add_anomaly(
        Anomaly(
            kind=AnomalyKind.TRADE_KEY_CLASH,
            symbol=execution.symbol,
            client_order_id=execution.client_order_id,
            trade_id=execution.trade_id,
            journaled=journaled.trade_identity.describe(),
            received=execution.trade_identity.describe(),
            first_seen_ms=execution.journal_time_ms,
        )
    )


def belongs(order: Order, symbol: str, exchange_order_id: int) -> bool:
    """Whether a report about (symbol, exchange order id) is about the journaled ``order`` (same client id)."""
    if order.symbol != symbol:
        return False
    return not (order.exchange_order_id and exchange_order_id and order.exchange_order_id != exchange_order_id)


def _ensure_new(tx: JournalTx, order: Order, *, exchange_order_id: int, time_ms: int, now_ms: int) -> Order:
    """Journal NEW before anything else happens to an accepted order (consumers always see NEW first)."""
    if exchange_order_id and order.exchange_order_id != exchange_order_id:
        order = order.with_changes(exchange_order_id=exchange_order_id)
        tx.put_order(order)
    if order.reported_new:
        return order
    order = _journal(tx, lifecycle.accepted(order, exchange_order_id=exchange_order_id, time_ms=time_ms, now_ms=now_ms))
    if not order.reported_new:  # NEW was already journaled (by an earlier run), or refused: remember it
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
    """Journal one user data stream event; ``complete=False`` means trades are missing (a gap).

    An event about an order the gateway did not place updates its foreign-order record instead
    (``order`` None): it is never an execution.
    """
    order = tx.get_order(event.client_order_id)
    if order is None or not belongs(order, event.symbol, event.exchange_order_id):
        note_foreign(tx, ForeignOrder.seen_in_event(event, now_ms=now_ms))
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


def forgotten(tx: JournalTx, client_order_id: str, answer: str, *, now_ms: int) -> Order | None:
    """An open order that the exchange no longer knows: an EXCHANGE_FORGOT_ORDER anomaly, and EXPIRED.

    The EXPIRED execution follows every trade the journal holds for the order (they were journaled,
    hence streamed, before it), and its cumulative figures are those trades' sums, so the consumer
    settles what was traded and releases the rest.
    """
    order = tx.get_order(client_order_id)
    if order is None or order.status not in OPEN_STATUSES:
        return order
    tx.add_anomaly(
        Anomaly(
            kind=AnomalyKind.EXCHANGE_FORGOT_ORDER,
            symbol=order.symbol,
            client_order_id=client_order_id,
            trade_id=0,
            journaled=(
                f"status={order.status.value} order_id={order.exchange_order_id} "
                f"executed_quantity={format(order.executed_qty, 'f')}"
            ),
            received=answer,
            first_seen_ms=now_ms,
        )
    )
    reason = f"EXCHANGE_FORGOT: the exchange answers {answer} for an order it had accepted"
    return _journal(tx, lifecycle.ended(order, ExecType.EXPIRED, reason=reason, time_ms=now_ms, now_ms=now_ms))


def note_foreign(tx: JournalTx, seen: ForeignOrder) -> ForeignOrder:
    """Record what the exchange reports about an order the gateway did not place, merged with what is known.

    Its status never moves back (a late open-orders answer cannot reopen a filled order), the
    executed quantity only grows, and an order once no longer open stays so.
    """
    known = tx.get_foreign(seen.key)
    if known is None:
        tx.put_foreign(seen)
        return seen
    status = lifecycle.foreign_status(known.status, seen.status)
    merged = replace(
        known,
        side=seen.side or known.side,
        type=seen.type or known.type,
        price=seen.price or known.price,
        quantity=seen.quantity or known.quantity,
        executed_qty=max(known.executed_qty, seen.executed_qty),
        status=status,
        is_open=known.is_open and seen.is_open and status in OPEN_STATUSES,
        last_seen_ms=max(known.last_seen_ms, seen.last_seen_ms),
    )
    if merged != known:
        tx.put_foreign(merged)
    return merged


def foreign_gone(tx: JournalTx, key: tuple[str, int, str], *, now_ms: int) -> ForeignOrder | None:
    """A foreign order the exchange no longer lists and cannot tell about: no longer open, last status kept."""
    known = tx.get_foreign(key)
    if known is None or not known.is_open:
        return known
    gone = replace(known, is_open=False, last_seen_ms=max(known.last_seen_ms, now_ms))
    tx.put_foreign(gone)
    return gone


def foreign_cancel(
    tx: JournalTx, key: tuple[str, int, str], answer: OrderSnapshot | None, error: str, *, now_ms: int
) -> ForeignOrder | None:
    """Record the gateway's cancel of a foreign order: its answer, or why it failed."""
    known = tx.get_foreign(key)
    if known is None:
        return None
    if answer is None and (known.cancel_time_ms or not known.is_open):
        # Already cancelled (or ended): a later attempt that raced it (from an open-orders answer
        # listed before that cancel) and failed with "unknown order" changes nothing.
        return known
    if answer is not None:
        known = note_foreign(tx, ForeignOrder.seen_in(answer, now_ms=now_ms))
        known = replace(known, cancel_time_ms=now_ms, cancel_error="")
    else:
        known = replace(known, cancel_error=error)
    tx.put_foreign(known)
    return known


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


def already_known(order: Order, event: ExchangeEvent, journaled_trade: Callable[[str], TradeIdentity | None]) -> bool:
    """Whether ``event`` is already journaled (checked against the committed order and recent trades).

    A trade counts as known only when the recent trade under its key is the same trade (a key that
    comes with other content goes to the journal, which records the clash).
    """
    if not belongs(order, event.symbol, event.exchange_order_id):
        return False
    if event.exec_type is ExecType.TRADE:
        if event.fill is None:
            return False
        identity = journaled_trade(trade_key(event.symbol, event.fill.trade_id))
        mine = TradeIdentity.of_fill(order.client_order_id, event.exchange_order_id, event.fill)
        return identity is not None and not identity.differences(mine)
    if event.exec_type is ExecType.NEW:
        return order.reported_new
    return order.is_final


def missing(order: Order, executed: Decimal) -> bool:
    """Whether the exchange reports more executed quantity than the journal has trades for."""
    return executed > order.executed_qty
