"""The gateway's state table decides every status change; fills are the one exception."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

import pytest

from services.exchange_gateway.domain import lifecycle
from services.exchange_gateway.domain.model import (
    FINAL_STATUSES,
    TRANSITIONS,
    AnomalyKind,
    ExecType,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    can_transition,
)

D = Decimal
S = OrderStatus
# Written out independently of the implementation: changing the table must change this test.
EXPECTED = {
    (S.UNKNOWN, S.NEW),
    (S.UNKNOWN, S.PARTIALLY_FILLED),
    (S.UNKNOWN, S.FILLED),
    (S.UNKNOWN, S.CANCELED),
    (S.UNKNOWN, S.REJECTED),
    (S.UNKNOWN, S.EXPIRED),
    (S.NEW, S.PARTIALLY_FILLED),
    (S.NEW, S.FILLED),
    (S.NEW, S.CANCELED),
    (S.NEW, S.REJECTED),
    (S.NEW, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCELED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
}


def order(status: OrderStatus, executed: str = "0") -> Order:
    request = OrderRequest("a", "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, D("1"), D("100"), None)
    placed = Order.from_request(request, now_ms=1, request_time_ms=1, recv_window_ms=5000)
    return placed.with_changes(
        status=status, exchange_order_id=7, executed_qty=D(executed), cum_quote_qty=D(executed) * 100
    )


def fill(trade_id: int, qty: str) -> Fill:
    return Fill(trade_id, D(qty), D("100"), D(qty) * 100, D(0), "BTC", False, 1000 + trade_id)


EVENTS: dict[str, Callable[[Order], lifecycle.Change]] = {
    "NEW": lambda o: lifecycle.accepted(o, exchange_order_id=7, time_ms=5, now_ms=9),
    "part-filling TRADE": lambda o: lifecycle.traded(o, fill(1, "0.25"), exchange_order_id=7, now_ms=9),
    "filling TRADE": lambda o: lifecycle.traded(o, fill(1, "1"), exchange_order_id=7, now_ms=9),
    **{
        t.value: (lambda o, t=t: lifecycle.ended(o, t, reason="why", time_ms=5, now_ms=9))
        for t in (ExecType.CANCELED, ExecType.REJECTED, ExecType.EXPIRED)
    },
}


def test_the_table_is_the_expected_set() -> None:
    assert set(TRANSITIONS) == EXPECTED
    for current, target in itertools.product(OrderStatus, OrderStatus):
        assert can_transition(current, target) is ((current, target) in EXPECTED)


@pytest.mark.parametrize("final", sorted(FINAL_STATUSES))
def test_nothing_leaves_a_final_status(final: OrderStatus) -> None:
    assert not any(can_transition(final, target) for target in OrderStatus)


@pytest.mark.parametrize("name", sorted(EVENTS))
@pytest.mark.parametrize("status", list(OrderStatus))
def test_no_report_applies_a_move_the_table_refuses(status: OrderStatus, name: str) -> None:
    before = order(status)
    change = EVENTS[name](before)
    after = change.order.status
    assert after is status or (status, after) in TRANSITIONS, f"{name} moved {status} to {after}"
    if change.execution is not None:
        assert change.execution.order_status is after
    if change.refused is not None:
        assert change.refused.kind is AnomalyKind.REFUSED_TRANSITION
        assert after is status
        assert change.refused.journaled == f"status={status.value}"
        if change.execution is None:  # no money: nothing to journal, nothing changes
            assert change.order is before


@pytest.mark.parametrize(
    ("status", "exec_type"),
    [
        (S.FILLED, ExecType.CANCELED),
        (S.CANCELED, ExecType.EXPIRED),
        (S.EXPIRED, ExecType.REJECTED),
        (S.REJECTED, ExecType.CANCELED),
        (S.PARTIALLY_FILLED, ExecType.REJECTED),
    ],
)
def test_an_end_the_table_refuses_journals_nothing_and_is_an_anomaly(status: OrderStatus, exec_type: ExecType) -> None:
    before = order(status)
    change = lifecycle.ended(before, exec_type, reason="late", time_ms=5, now_ms=9)
    assert change.order is before and change.execution is None
    assert change.refused is not None and change.refused.received.startswith(exec_type.value)


@pytest.mark.parametrize("status", [S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED])
def test_a_trade_after_the_end_is_journaled_with_its_money_and_the_status_kept(status: OrderStatus) -> None:
    before = order(status, executed="1" if status is S.FILLED else "0.5")
    change = lifecycle.traded(before, fill(8, "0.25"), exchange_order_id=7, now_ms=9)
    assert change.order.status is status
    assert change.order.executed_qty == before.executed_qty + D("0.25")
    assert change.execution is not None and change.execution.exec_type is ExecType.TRADE
    assert (change.execution.last_qty, change.execution.cum_qty) == (D("0.25"), change.order.executed_qty)
    assert change.execution.order_status is status
    assert change.refused is not None and change.refused.trade_id == 8
    assert "the trade is journaled" in change.refused.detail


def test_a_repeated_report_is_no_move_and_no_anomaly() -> None:
    for status, change in [
        (S.NEW, lifecycle.accepted(order(S.NEW), exchange_order_id=7, time_ms=5, now_ms=9)),
        (S.CANCELED, lifecycle.ended(order(S.CANCELED), ExecType.CANCELED, reason="", time_ms=5, now_ms=9)),
    ]:
        assert change.order.status is status and change.refused is None and change.execution is not None


def test_a_foreign_order_keeps_its_status_against_a_late_report() -> None:
    assert lifecycle.foreign_status(S.NEW, S.PARTIALLY_FILLED) is S.PARTIALLY_FILLED
    assert lifecycle.foreign_status(S.FILLED, S.NEW) is S.FILLED
    assert lifecycle.foreign_status(S.PARTIALLY_FILLED, S.NEW) is S.PARTIALLY_FILLED
    assert lifecycle.foreign_status(S.NEW, S.NEW) is S.NEW
