"""How events change an order: executions from the stream, answers from the gateway, requests from users.

Each function is pure: it takes an order and an event and returns an ``Outcome`` (the new order,
a fill to record, the side effects owed to the user service). Applying the same non-trade event
twice changes nothing the second time, so the stream and a gateway answer may both report it.
Trades are deduplicated by fill id by the caller before they get here.

The table in ``states`` decides every change of state: a move it does not allow is refused (the
order keeps its state) and comes back as the outcome's anomaly. Fills are the one exception: a
trade's quantities and settlement are recorded even when its move is refused.
"""

from __future__ import annotations

from decimal import Decimal

from shared.errors import FailedPrecondition
from shared.money import ZERO

from .model import (
    MARKET_TYPES,
    Effect,
    ExchangeOrder,
    ExchangeStatus,
    ExecutionReport,
    ExecutionType,
    FeeSchedule,
    Fill,
    Order,
    Outcome,
    SettleTrade,
    Side,
    final_release,
)
from .states import CANCELLABLE_STATUSES, FINAL_STATES, State, can_transition

EXPIRED_BY_US = "expire_time reached"
CAPPED_BUY_EXPIRED = (
    "not filled within the reserved amount (the price moved past the buy's price cap); the rest was released"
)
DEFAULT_FEES = FeeSchedule()


def settlement(order: Order, fill: Fill, exchange_fee_asset: str = "", exchange_fee: Decimal = ZERO) -> SettleTrade:
    """What the user service books for one fill.

    BUY: debit the quote spent (price x quantity), credit the base bought. SELL: debit the base
    sold, credit the quote received. The fill's commission is the platform's fee in the asset
    received; what the exchange charged the platform's account goes to the house with it.
    """
    if order.side is Side.BUY:
        debit_asset, debit_amount = order.quote_asset, fill.quote_quantity
        credit_asset, credit_amount = order.base_asset, fill.quantity
    else:
        debit_asset, debit_amount = order.base_asset, fill.quantity
        credit_asset, credit_amount = order.quote_asset, fill.quote_quantity
    return SettleTrade(
        trade_id=fill.fill_id,
        order_id=order.order_id,
        user_id=order.user_id,
        debit_asset=debit_asset,
        debit_amount=debit_amount,
        credit_asset=credit_asset,
        credit_amount=credit_amount,
        fee_asset=fill.commission_asset if fill.commission > 0 else "",
        fee_amount=fill.commission,
        trade_time_ms=fill.trade_time_ms,
        exchange_fee_asset=exchange_fee_asset if exchange_fee > 0 else "",
        exchange_fee_amount=exchange_fee,
    )


def apply_execution(order: Order, report: ExecutionReport, now_ms: int, fees: FeeSchedule = DEFAULT_FEES) -> Outcome:
    """Apply one journaled execution (already known not to be a duplicate trade)."""
    kind = report.execution_type
    if kind is ExecutionType.TRADE:
        return apply_trade(order, report, now_ms, fees)
    if kind is ExecutionType.NEW:
        return accepted(order, report.exchange_order_id, now_ms)
    if kind is ExecutionType.CANCELED:
        target = State.EXPIRED if order.expire_requested else State.CANCELLED
        return end(order, target, "", report.exchange_order_id, now_ms)
    if kind is ExecutionType.REJECTED:
        reason = report.reject_reason or "rejected by the exchange"
        return end(order, State.REJECTED, reason, report.exchange_order_id, now_ms)
    if kind is ExecutionType.EXPIRED:
        return end(order, State.EXPIRED, _expired_reason(order, report.reject_reason), report.exchange_order_id, now_ms)
    return Outcome(order, anomaly=f"unknown execution type {kind}")


def _expired_reason(order: Order, reason: str) -> str:
    if order.side is Side.BUY and order.type in MARKET_TYPES:
        # Sent as an IOC at its price cap (see ``placement.submission``): what did not fill expired.
        return f"{CAPPED_BUY_EXPIRED} ({reason})" if reason else CAPPED_BUY_EXPIRED
    return reason or "expired by the exchange"


def apply_trade(order: Order, report: ExecutionReport, now_ms: int, fees: FeeSchedule = DEFAULT_FEES) -> Outcome:
    """Record one trade: quantities, quote, the platform's fee, status; owe its settlement (and the final release).

    The user's commission is the platform's fee schedule applied to what the user receives, in that
    asset, whatever the exchange charged (the exchange's commission travels with the settlement to
    the house account).
    """
    received_asset = order.base_asset if order.side is Side.BUY else order.quote_asset
    received = report.last_quantity if order.side is Side.BUY else report.last_quote_quantity
    fill = Fill(
        fill_id=report.fill_id,
        order_id=order.order_id,
        symbol=order.symbol,
        side=order.side,
        price=report.last_price,
        quantity=report.last_quantity,
        quote_quantity=report.last_quote_quantity,
        commission=fees.fee(received, report.is_maker),
        commission_asset=received_asset,
        is_maker=report.is_maker,
        trade_time_ms=report.transaction_time_ms or now_ms,
        sequence=report.sequence,
    )
    anomalies: list[str] = []
    filled = order.filled_quantity + fill.quantity
    quote = order.filled_quote_quantity + fill.quote_quantity
    commission = order.commission + fill.commission
    commission_asset = received_asset if commission > 0 else order.commission_asset
    if report.cumulative_quantity and report.cumulative_quantity != filled:
        anomalies.append(f"cumulative quantity {report.cumulative_quantity} at the exchange, {filled} here")
    if filled > order.quantity:
        anomalies.append(f"overfill: {filled} filled of {order.quantity}")

    effects: list[Effect] = [settlement(order, fill, report.commission_asset, report.commission)]
    target = State.FILLED if filled >= order.quantity else State.PARTIALLY_FILLED
    if can_transition(order.state, target):
        state = target
        if target is State.FILLED:
            effects.append(final_release(order.order_id))
    else:
        # Fills are money, the table's one exception: the move is refused (a CANCELLED order stays
        # CANCELLED, nothing is released twice) but the trade is recorded and settled, however late.
        state = order.state
        anomalies.append(f"trade {fill.fill_id} after the order was {order.state}: {refused(order.state, target)}")
    changes: dict[str, object] = {
        "state": state,
        "filled_quantity": filled,
        "filled_quote_quantity": quote,
        "commission": commission,
        "commission_asset": commission_asset,
    }
    if state in FINAL_STATES:
        changes["cancel_requested"] = False
    if not order.exchange_order_id and report.exchange_order_id:
        changes["exchange_order_id"] = str(report.exchange_order_id)
    return Outcome(order.evolve(now_ms, **changes), fill=fill, effects=tuple(effects), anomaly="; ".join(anomalies))


def refused(current: State, target: State) -> str:
    """The anomaly recorded for a move the table does not allow."""
    return f"refused transition {current} -> {target}"


def accepted(order: Order, exchange_order_id: int, now_ms: int) -> Outcome:
    """The exchange has the order: remember its id; an order still being submitted is now NEW.

    For an order already further along (the stream overtook the answer) this is old news, not a
    move: nothing but the id changes.
    """
    changes: dict[str, object] = {}
    if exchange_order_id and order.exchange_order_id != str(exchange_order_id):
        changes["exchange_order_id"] = str(exchange_order_id)
    if can_transition(order.state, State.NEW):
        changes["state"] = State.NEW
    if not changes:
        return Outcome(order)
    return Outcome(order.evolve(now_ms, **changes))


def end(order: Order, target: State, reason: str, exchange_order_id: int, now_ms: int) -> Outcome:
    """The order ended at the exchange (or here): set the final state and owe the release of what is left.

    A second report of the same end changes nothing; any other end the table refuses (a FILLED
    order cannot become CANCELLED) leaves the order as it is and is reported as an anomaly.
    """
    if order.state is target:
        return Outcome(order)
    if not can_transition(order.state, target):
        return Outcome(order, anomaly=refused(order.state, target))
    if target is State.EXPIRED and order.expire_requested and not reason:
        reason = EXPIRED_BY_US
    changes: dict[str, object] = {"state": target, "cancel_requested": False}
    if target in (State.REJECTED, State.EXPIRED):
        changes["reject_reason"] = reason[:500]
    if exchange_order_id and not order.exchange_order_id:
        changes["exchange_order_id"] = str(exchange_order_id)
    return Outcome(order.evolve(now_ms, **changes), effects=(final_release(order.order_id),))


def apply_exchange_order(order: Order, snapshot: ExchangeOrder, now_ms: int) -> Outcome:
    """Apply the gateway's answer to a submit, cancel or query.

    Fills only ever come from the stream (the answer's cumulative figures are not counted), so a
    final answer is applied only when every trade it reports has already been applied here;
    otherwise the release would run before the settlements, and the stream will deliver the end.
    """
    status = snapshot.status
    if status is ExchangeStatus.UNKNOWN:
        return submit_unknown(order, now_ms)
    if status in (ExchangeStatus.NEW, ExchangeStatus.PARTIALLY_FILLED, ExchangeStatus.FILLED):
        return accepted(order, snapshot.exchange_order_id, now_ms)
    if snapshot.executed_quantity != order.filled_quantity:
        return accepted(order, snapshot.exchange_order_id, now_ms)
    if status is ExchangeStatus.CANCELED:
        target = State.EXPIRED if order.expire_requested else State.CANCELLED
        return end(order, target, "", snapshot.exchange_order_id, now_ms)
    if status is ExchangeStatus.REJECTED:
        reason = snapshot.reject_reason or "rejected by the exchange"
        return end(order, State.REJECTED, reason, snapshot.exchange_order_id, now_ms)
    return end(order, State.EXPIRED, _expired_reason(order, snapshot.reject_reason), snapshot.exchange_order_id, now_ms)


def submit_unknown(order: Order, now_ms: int) -> Outcome:
    """Nobody can say whether the exchange has the order: an order being submitted is SUBMIT_UNKNOWN.

    An order already past PLACING (the stream got there first) knows more than this answer: it stays.
    """
    if can_transition(order.state, State.SUBMIT_UNKNOWN):
        return Outcome(order.evolve(now_ms, state=State.SUBMIT_UNKNOWN))
    return Outcome(order)


def request_cancel(order: Order, now_ms: int) -> Order:
    """Mark a cancel as requested; only PENDING or PARTIALLY_FILLED orders may be cancelled."""
    if order.status not in CANCELLABLE_STATUSES:
        raise FailedPrecondition(
            f"order {order.order_id} is {order.status}; only PENDING or PARTIALLY_FILLED orders can be cancelled",
            reason="ORDER_NOT_CANCELLABLE",
            metadata={"order_id": order.order_id, "status": str(order.status)},
        )
    if order.cancel_requested:
        return order
    return order.evolve(now_ms, cancel_requested=True)


def cancel_refused(order: Order, now_ms: int) -> Order:
    """The exchange refused the cancel and the order is still working: clear the request."""
    if not order.cancel_requested or order.is_final:
        return order
    return order.evolve(now_ms, cancel_requested=False)


def request_expiry(order: Order, now_ms: int) -> Order:
    """Mark that we are cancelling the order because its expire_time passed (its end will be EXPIRED)."""
    if order.is_final or order.expire_requested:
        return order
    return order.evolve(now_ms, expire_requested=True)


def give_up(order: Order, reason: str, now_ms: int) -> Outcome:
    """End an order that never reached the exchange as REJECTED, owing the release of any reservation."""
    return end(order, State.REJECTED, reason, 0, now_ms)


__all__ = [
    "CAPPED_BUY_EXPIRED",
    "DEFAULT_FEES",
    "EXPIRED_BY_US",
    "accepted",
    "apply_exchange_order",
    "apply_execution",
    "apply_trade",
    "cancel_refused",
    "end",
    "give_up",
    "refused",
    "request_cancel",
    "request_expiry",
    "settlement",
    "submit_unknown",
]
