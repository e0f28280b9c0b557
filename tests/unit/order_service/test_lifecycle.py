"""Applying executions and gateway answers to an order: exact arithmetic and the real races."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest

from services.order_service.domain.lifecycle import (
    EXPIRED_BY_US,
    apply_exchange_order,
    apply_execution,
    cancel_refused,
    give_up,
    request_cancel,
    request_expiry,
    settlement,
    submit_unknown,
)
from services.order_service.domain.model import (
    ExchangeOrder,
    ExchangeStatus,
    ExecutionReport,
    ExecutionType,
    FeeSchedule,
    Order,
    OrderType,
    Outcome,
    ReleaseFunds,
    SettleTrade,
    Side,
    TimeInForce,
)
from services.order_service.domain.states import FINAL_STATES, TRANSITIONS, State, Status
from shared.errors import FailedPrecondition

D = Decimal
NOW = 1_700_000_000_000


def order(state: State = State.NEW, side: Side = Side.BUY, quantity: str = "1.00000", **changes: object) -> Order:
    base = Order(
        order_id="ord_1",
        client_order_id="c1",
        user_id="usr_1",
        symbol="BTCUSDT",
        base_asset="BTC",
        quote_asset="USDT",
        side=side,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        quantity=D(quantity),
        price=D("100.00"),
        stop_price=None,
        expire_time_ms=None,
        reserve_asset="USDT",
        reserve_amount=D("100"),
        state=state,
        create_time_ms=NOW,
        update_time_ms=NOW,
    )
    return base.evolve(NOW, **changes) if changes else base


def trade(
    sequence: int, qty: str, price: str, trade_id: int, *, commission: str = "0", asset: str = "BTC"
) -> ExecutionReport:
    q, p = D(qty), D(price)
    return ExecutionReport(
        sequence=sequence,
        client_order_id="ord_1",
        exchange_order_id=77,
        symbol="BTCUSDT",
        execution_type=ExecutionType.TRADE,
        order_status=ExchangeStatus.PARTIALLY_FILLED,
        trade_id=trade_id,
        last_quantity=q,
        last_price=p,
        last_quote_quantity=q * p,
        commission=D(commission),
        commission_asset=asset,
        transaction_time_ms=NOW + sequence,
    )


def event(kind: ExecutionType, reason: str = "") -> ExecutionReport:
    return ExecutionReport(
        sequence=9,
        client_order_id="ord_1",
        exchange_order_id=77,
        symbol="BTCUSDT",
        execution_type=kind,
        order_status=ExchangeStatus.NEW,
        reject_reason=reason,
    )


def test_average_price_is_quote_over_quantity_exact_to_eight_places() -> None:
    o = order()
    for i, (qty, px) in enumerate([("0.3", "100.01"), ("0.3", "100.02"), ("0.1", "100.05")], start=1):
        o = apply_execution(o, trade(i, qty, px, i), NOW).order
    assert o.filled_quantity == D("0.7")
    assert o.filled_quote_quantity == D("70.014")
    # 70.014 / 0.7 = 100.02 exactly
    assert o.average_price == D("100.02000000")
    assert o.status is Status.PARTIALLY_FILLED
    assert o.remaining_quantity == D("0.3")


def test_average_price_rounds_half_even_at_the_eighth_place() -> None:
    o = order(quantity="3")
    o = apply_execution(o, trade(1, "1", "1", 1), NOW).order
    o = apply_execution(o, trade(2, "2", "1.00000001", 2), NOW).order
    # 3.00000002 / 3 = 1.000000006666...
    assert o.average_price == D("1.00000001")
    assert order().average_price == 0


def test_commission_adds_up_in_its_asset() -> None:
    o = order()
    o = apply_execution(o, trade(1, "0.4", "100", 1, commission="0.0004"), NOW).order
    o = apply_execution(o, trade(2, "0.6", "100", 2, commission="0.0006"), NOW).order
    assert o.commission == D("0.0010")
    assert o.commission_asset == "BTC"
    assert o.state is State.FILLED


def test_an_exchange_commission_in_bnb_is_the_house_cost_and_the_user_pays_the_platform_fee_in_the_asset_received() -> (
    None
):
    o = apply_execution(order(), trade(1, "0.4", "100", 1, commission="0.0004"), NOW).order
    outcome = apply_execution(o, trade(2, "0.1", "100", 2, commission="0.01", asset="BNB"), NOW)
    assert outcome.order.commission == D("0.0005")  # 0.1% of 0.4 + 0.1 BTC received
    assert outcome.order.commission_asset == "BTC"
    assert outcome.anomaly == ""
    settle = outcome.effects[0]
    assert isinstance(settle, SettleTrade)
    assert (settle.fee_asset, settle.fee_amount) == ("BTC", D("0.0001"))
    assert (settle.exchange_fee_asset, settle.exchange_fee_amount) == ("BNB", D("0.01"))


def test_the_platform_fee_follows_the_schedule_not_the_exchange_and_rounds_half_up() -> None:
    fees = FeeSchedule(maker=D("0.0002"), taker=D("0.0015"))
    sell = order(side=Side.SELL)
    taker = apply_execution(sell, trade(1, "0.3", "100.05", 1, commission="9", asset="BNB"), NOW, fees)
    assert taker.fill is not None
    # 0.3 x 100.05 = 30.015 USDT received; 0.15% = 0.0450225 -> 0.04502250
    assert (taker.fill.commission, taker.fill.commission_asset) == (D("0.04502250"), "USDT")
    maker_report = replace(trade(2, "0.00000003", "100", 2), is_maker=True)
    maker = apply_execution(taker.order, maker_report, NOW, fees)
    assert maker.fill is not None
    # 0.000003 USDT x 0.02% = 0.0000000006 -> rounds to 0
    assert maker.fill.commission == D("0")
    settle = maker.effects[0]
    assert isinstance(settle, SettleTrade) and settle.exchange_fee_asset == "" and settle.exchange_fee_amount == 0


def test_a_buy_trade_settles_quote_debit_base_credit_and_fee() -> None:
    outcome = apply_execution(order(), trade(1, "0.25", "100.10", 5, commission="0.00025"), NOW)
    assert outcome.fill is not None and outcome.fill.fill_id == "BTCUSDT:5"
    (settle,) = outcome.effects
    assert settle == SettleTrade(
        trade_id="BTCUSDT:5",
        order_id="ord_1",
        user_id="usr_1",
        debit_asset="USDT",
        debit_amount=D("25.025"),
        credit_asset="BTC",
        credit_amount=D("0.25"),
        fee_asset="BTC",
        fee_amount=D("0.00025"),
        trade_time_ms=NOW + 1,
        exchange_fee_asset="BTC",
        exchange_fee_amount=D("0.00025"),
    )


def test_a_sell_trade_settles_base_debit_quote_credit() -> None:
    o = order(side=Side.SELL)
    fill = apply_execution(o, trade(1, "0.5", "100", 6, commission="0.05", asset="USDT"), NOW).fill
    assert fill is not None
    s = settlement(o, fill)
    assert (s.debit_asset, s.debit_amount, s.credit_asset, s.credit_amount) == ("BTC", D("0.5"), "USDT", D("50.0"))
    assert (s.fee_asset, s.fee_amount) == ("USDT", D("0.05"))


def test_the_last_trade_fills_the_order_and_owes_the_final_release_after_its_settlement() -> None:
    o = apply_execution(order(), trade(1, "0.5", "99", 1), NOW).order
    outcome = apply_execution(o, trade(2, "0.5", "99", 2), NOW)
    assert outcome.order.state is State.FILLED
    assert [type(e) for e in outcome.effects] == [SettleTrade, ReleaseFunds]
    assert outcome.effects[1] == ReleaseFunds("ord_1", "ord_1:final", None)


def test_a_trade_after_a_cancel_was_requested_still_applies() -> None:
    o = request_cancel(order(), NOW)
    assert o.cancel_requested
    outcome = apply_execution(o, trade(1, "0.5", "100", 1), NOW)
    assert outcome.order.state is State.PARTIALLY_FILLED
    assert outcome.order.cancel_requested
    ended = apply_execution(outcome.order, event(ExecutionType.CANCELED), NOW).order
    assert ended.state is State.CANCELLED
    assert not ended.cancel_requested
    assert ended.filled_quantity == D("0.5")


def test_a_late_trade_on_a_final_order_is_still_recorded_and_settled() -> None:
    cancelled = apply_execution(order(), event(ExecutionType.CANCELED), NOW).order
    outcome = apply_execution(cancelled, trade(3, "0.1", "100", 3), NOW)
    assert outcome.order.state is State.CANCELLED
    assert outcome.order.filled_quantity == D("0.1")
    assert outcome.fill is not None
    assert [type(e) for e in outcome.effects] == [SettleTrade]
    assert "after the order was CANCELLED" in outcome.anomaly


def test_the_stream_may_overtake_the_submit_answer() -> None:
    submitting = order(State.PLACING)
    filled = apply_execution(submitting, trade(1, "1", "100", 1), NOW).order
    assert filled.state is State.FILLED
    # The answer arrives afterwards: it cannot move the order back.
    answer = ExchangeOrder("ord_1", 77, ExchangeStatus.NEW, D(0), D(0))
    assert apply_exchange_order(filled, answer, NOW).order is filled


@pytest.mark.parametrize(
    ("kind", "state", "reason"),
    [
        (ExecutionType.CANCELED, State.CANCELLED, ""),
        (ExecutionType.REJECTED, State.REJECTED, "insufficient balance"),
        (ExecutionType.EXPIRED, State.EXPIRED, "IOC"),
    ],
)
def test_an_end_applied_twice_changes_nothing_the_second_time(kind: ExecutionType, state: State, reason: str) -> None:
    first = apply_execution(order(), event(kind, reason), NOW)
    assert first.order.state is state
    assert first.effects == (ReleaseFunds("ord_1", "ord_1:final", None),)
    if reason:
        assert first.order.reject_reason == reason
    second = apply_execution(first.order, event(kind, reason), NOW)
    assert second.order is first.order
    assert second.effects == ()


def test_our_expiry_turns_the_exchange_cancel_into_expired() -> None:
    o = request_expiry(order(), NOW)
    ended = apply_execution(o, event(ExecutionType.CANCELED), NOW).order
    assert ended.state is State.EXPIRED
    assert ended.reject_reason == EXPIRED_BY_US


def test_new_moves_an_order_being_submitted_to_new_and_records_the_exchange_id() -> None:
    outcome = apply_execution(order(State.SUBMIT_UNKNOWN), event(ExecutionType.NEW), NOW)
    assert outcome.order.state is State.NEW
    assert outcome.order.exchange_order_id == "77"
    again = apply_execution(outcome.order, event(ExecutionType.NEW), NOW)
    assert again.order is outcome.order


def test_a_refused_transition_leaves_the_order_and_reports_it() -> None:
    partly = apply_execution(order(), trade(1, "0.5", "100", 1), NOW).order
    outcome = apply_execution(partly, event(ExecutionType.REJECTED, "late reject"), NOW)
    assert outcome.order is partly
    assert "PARTIALLY_FILLED -> REJECTED" in outcome.anomaly


def test_an_unknown_answer_marks_a_submitting_order_unknown() -> None:
    answer = ExchangeOrder("ord_1", 0, ExchangeStatus.UNKNOWN, D(0), D(0))
    assert apply_exchange_order(order(State.PLACING), answer, NOW).order.state is State.SUBMIT_UNKNOWN
    new = order(State.NEW)
    assert apply_exchange_order(new, answer, NOW).order is new


def test_a_final_answer_waits_for_the_trades_it_reports() -> None:
    # The gateway says CANCELED with 0.4 executed, but no trade is applied here yet: releasing now
    # would run before the settlements, so the answer only records the exchange id.
    answer = ExchangeOrder("ord_1", 77, ExchangeStatus.CANCELED, D("0.4"), D("40"))
    outcome = apply_exchange_order(order(State.NEW), answer, NOW)
    assert outcome.order.state is State.NEW and outcome.effects == ()
    partly = apply_execution(order(), trade(1, "0.4", "100", 1), NOW).order
    ended = apply_exchange_order(partly, answer, NOW)
    assert ended.order.state is State.CANCELLED
    assert ended.effects == (ReleaseFunds("ord_1", "ord_1:final", None),)


def test_a_rejected_answer_ends_the_order_with_its_reason() -> None:
    answer = ExchangeOrder("ord_1", 0, ExchangeStatus.REJECTED, D(0), D(0), "Order would trigger immediately.")
    outcome = apply_exchange_order(order(State.PLACING), answer, NOW)
    assert outcome.order.state is State.REJECTED
    assert outcome.order.reject_reason == "Order would trigger immediately."


@pytest.mark.parametrize("state", [State.FILLED, State.CANCELLED, State.REJECTED, State.EXPIRED])
def test_only_pending_or_partially_filled_orders_can_be_cancelled(state: State) -> None:
    with pytest.raises(FailedPrecondition):
        request_cancel(order(state), NOW)


def test_a_refused_cancel_clears_the_request() -> None:
    o = request_cancel(order(State.PARTIALLY_FILLED), NOW)
    assert not cancel_refused(o, NOW).cancel_requested


def answer(status: ExchangeStatus) -> ExchangeOrder:
    return ExchangeOrder("ord_1", 77, status, D(0), D(0), "refused" if status is ExchangeStatus.REJECTED else "")


# Every event that can reach an order, applied to an order with nothing filled yet.
EVENTS: dict[str, Callable[[Order], Outcome]] = {
    "NEW execution": lambda o: apply_execution(o, event(ExecutionType.NEW), NOW),
    "part-filling trade": lambda o: apply_execution(o, trade(1, "0.5", "100", 1), NOW),
    "filling trade": lambda o: apply_execution(o, trade(1, "1", "100", 1), NOW),
    "CANCELED execution": lambda o: apply_execution(o, event(ExecutionType.CANCELED), NOW),
    "REJECTED execution": lambda o: apply_execution(o, event(ExecutionType.REJECTED, "no"), NOW),
    "EXPIRED execution": lambda o: apply_execution(o, event(ExecutionType.EXPIRED, "IOC"), NOW),
    **{f"{s.value} answer": (lambda o, s=s: apply_exchange_order(o, answer(s), NOW)) for s in ExchangeStatus},
    "unknown submission": lambda o: submit_unknown(o, NOW),
    "given up": lambda o: give_up(o, "interrupted", NOW),
}


@pytest.mark.parametrize("name", sorted(EVENTS))
@pytest.mark.parametrize("state", list(State))
def test_no_event_applies_a_move_the_table_refuses(state: State, name: str) -> None:
    before = order(state)
    outcome = EVENTS[name](before)
    after = outcome.order.state
    assert after is state or (state, after) in TRANSITIONS, f"{name} moved {state} to {after}"
    if after is state and outcome.fill is None:
        # Refused or no news: nothing of the order changed but perhaps the exchange's id, and nothing is owed.
        def but_the_id(o: Order) -> Order:
            return replace(o, exchange_order_id="", version=0, update_time_ms=0)

        assert but_the_id(outcome.order) == but_the_id(before)
        assert outcome.effects == ()


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        (State.FILLED, ExecutionType.CANCELED),
        (State.FILLED, ExecutionType.EXPIRED),
        (State.CANCELLED, ExecutionType.REJECTED),
        (State.REJECTED, ExecutionType.CANCELED),
        (State.EXPIRED, ExecutionType.CANCELED),
        (State.PARTIALLY_FILLED, ExecutionType.REJECTED),
    ],
)
def test_an_end_the_table_refuses_leaves_the_order_and_is_an_anomaly(state: State, kind: ExecutionType) -> None:
    before = order(state)
    outcome = apply_execution(before, event(kind, "late"), NOW)
    assert outcome.order is before
    assert outcome.effects == ()
    assert f"refused transition {state} -> " in outcome.anomaly


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_a_fill_after_the_end_records_its_money_but_not_the_move(state: State) -> None:
    before = order(state, filled_quantity=D("1.00000") if state is State.FILLED else D(0))
    outcome = apply_execution(before, trade(5, "0.2", "100", 5), NOW)
    assert outcome.order.state is state
    assert outcome.fill is not None and outcome.fill.quantity == D("0.2")
    assert outcome.order.filled_quantity == before.filled_quantity + D("0.2")
    assert outcome.order.filled_quote_quantity == D("20.0")
    (settle,) = outcome.effects  # the settlement, and no second release
    assert isinstance(settle, SettleTrade) and settle.debit_amount == D("20.0")
    assert f"refused transition {state} -> " in outcome.anomaly


def test_the_moves_the_table_allows_carry_no_anomaly() -> None:
    placing = order(State.PLACING)
    unknown = submit_unknown(placing, NOW)
    new = apply_execution(unknown.order, event(ExecutionType.NEW), NOW)
    partly = apply_execution(new.order, trade(1, "0.5", "100", 1), NOW)
    filled = apply_execution(partly.order, trade(2, "0.5", "100", 2), NOW)
    states = [o.order.state for o in (unknown, new, partly, filled)]
    assert states == [State.SUBMIT_UNKNOWN, State.NEW, State.PARTIALLY_FILLED, State.FILLED]
    assert all(o.anomaly == "" for o in (unknown, new, partly, filled))
