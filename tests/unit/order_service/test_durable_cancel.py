"""A requested cancel is carried out: sent again after any failure or restart, never overtaken by a submission.

The gateway is "down" as a killed process is: every call fails with UNAVAILABLE before anything
reaches it. The reconciler's passes are driven by hand (``tick``), so each step is exact.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from services.order_service.domain.model import ExchangeStatus, OrderType, Side, TimeInForce
from services.order_service.domain.placement import NewOrderRequest
from services.order_service.domain.states import State, Status
from services.order_service.service.deadline import Deadline

from .conftest import ALICE, Harness, limit_buy

D = Decimal


def usdt(h: Harness) -> tuple[Decimal, Decimal]:
    return h.users.balance(ALICE, "USDT")


async def test_a_cancel_whose_call_was_refused_is_pending_then_sent_when_the_gateway_returns(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.01000", "49000.00"))
    assert order.status is Status.PENDING and h.gateway.sent[order.order_id] == 1

    h.gateway.down = True
    answered = await h.app.cancel_order(h.alice, order.order_id, Deadline.after(5))
    assert answered.status is Status.PENDING and answered.cancel_requested, "the answer says the cancel is pending"
    assert h.gateway.calls["cancel_refused"] == 1
    await h.app.reconciler.tick()  # still down: nothing changes, the request stays
    assert (await h.order(order.order_id)).cancel_requested

    h.gateway.down = False
    still_waiting = await h.app.reconciler.tick()
    await h.settle()
    after = await h.order(order.order_id)
    assert after.status is Status.CANCELLED and not after.cancel_requested
    assert still_waiting is False
    assert h.gateway.journal[order.order_id].status is ExchangeStatus.CANCELED
    assert usdt(h) == (D("100000"), D("0")), "the reservation is released"


async def test_a_pending_cancel_survives_a_restart_and_is_sent_by_recovery(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.01000", "49000.00"))
    h.gateway.down = True
    await h.app.cancel_order(h.alice, order.order_id, Deadline.after(5))
    await h.crash()

    h.gateway.down = False
    await h.restart()
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.CANCELLED
    assert h.gateway.journal[order.order_id].status is ExchangeStatus.CANCELED
    assert usdt(h) == (D("100000"), D("0"))


async def test_an_order_placed_during_the_outage_and_cancelled_is_never_submitted(harness: Harness) -> None:
    h = harness
    h.app.reconciler.submit_window = 3600.0
    h.gateway.down = True
    order = await h.place(limit_buy("0.01000", "49000.00"))
    assert order.state is State.SUBMIT_UNKNOWN and usdt(h) == (D("99510"), D("490"))
    cancelled = await h.app.cancel_order(h.alice, order.order_id, Deadline.after(5))
    assert cancelled.cancel_requested and cancelled.status is Status.PENDING

    h.gateway.down = False
    submits = h.gateway.calls["submit"]
    await h.app.reconciler.tick()  # a submission might still be on its way: wait, never resubmit
    assert (await h.order(order.order_id)).state is State.SUBMIT_UNKNOWN
    assert h.gateway.calls["submit"] == submits and h.gateway.sent[order.order_id] == 0

    h.app.reconciler.submit_window = 0.0  # no submission can still arrive
    await h.app.reconciler.tick()
    await h.settle()
    after = await h.order(order.order_id)
    assert after.status is Status.CANCELLED and after.filled_quantity == 0
    assert h.gateway.calls["submit"] == submits and h.gateway.sent[order.order_id] == 0
    assert usdt(h) == (D("100000"), D("0"))


async def test_a_cancelled_in_flight_order_the_gateway_did_journal_is_cancelled_at_the_exchange(
    harness: Harness,
) -> None:
    h = harness
    h.gateway.submit_answer = ExchangeStatus.UNKNOWN  # journaled and sent, answer unknown
    order = await h.place(limit_buy("0.01000", "49000.00"))
    assert order.state is State.SUBMIT_UNKNOWN
    h.gateway.submit_answer = None
    h.gateway.down = True
    await h.app.cancel_order(h.alice, order.order_id, Deadline.after(5))
    h.gateway.down = False

    await h.app.reconciler.tick()
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.CANCELLED
    assert h.gateway.sent[order.order_id] == 1, "sent once, by the placement; the cancel followed it"
    assert h.gateway.journal[order.order_id].status is ExchangeStatus.CANCELED


async def test_a_market_buy_is_sent_as_a_limit_ioc_capped_at_its_reservation(harness: Harness) -> None:
    h = harness
    request = NewOrderRequest(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity="0.01000")
    order = await h.place(request)
    sent = h.gateway.submissions[order.order_id]
    assert order.reserve_amount == D("525")  # 50000 x 0.01 x 1.05
    assert (sent.type, sent.time_in_force, sent.price) == (OrderType.LIMIT, TimeInForce.IOC, D("52500"))
    assert sent.price is not None and sent.price * order.quantity <= order.reserve_amount
    sell = await h.place(replace(request, side=Side.SELL))
    assert h.gateway.submissions[sell.order_id].type is OrderType.MARKET, "a sell cannot overspend: sent as placed"
