"""A crash at any point between two steps loses nothing and doubles nothing.

Each test lets the process "die" at one point (a ``Crash`` raised from a fake, then every task
cancelled with no clean-up), restarts a fresh app over the same SQLite file and the surviving fakes,
and checks the end state: order status, exact balances, and how often each side effect happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest

from services.order_service.domain.model import ORDER_ID_PREFIX
from services.order_service.domain.states import State, Status
from services.order_service.service import executions as executions_module
from services.order_service.service.deadline import Deadline
from services.order_service.service.recovery import INTERRUPTED
from shared.errors import Unavailable
from shared.ids import new_id

from .conftest import ALICE, Harness, limit_buy
from .fakes import Crash

D = Decimal


def crash_at(method: str, stage: str, times: int = 1) -> Callable[[str, str], None]:
    """A hook that kills the process the first ``times`` times ``method`` reaches ``stage``."""
    left = [times]

    def hook(m: str, s: str) -> None:
        if (m, s) == (method, stage) and left[0] > 0:
            left[0] -= 1
            raise Crash(f"killed at {method}/{stage}")

    return hook


def ledger(h: Harness, kind: str) -> int:
    return sum(1 for e in h.users.ledger if e.kind == kind)


async def only_order(h: Harness):  # type: ignore[no-untyped-def]
    page = await h.app.queries.list_orders(h.alice)
    assert len(page.orders) == 1
    return page.orders[0]


@pytest.mark.parametrize("stage", ["before", "after"])
async def test_crash_around_the_reservation_finishes_the_placement_with_one_reservation(
    harness: Harness, stage: str
) -> None:
    # "before": ReserveFunds never ran; "after": it ran and the process died before submitting.
    h = harness
    h.users.hook = crash_at("reserve", stage)
    with pytest.raises(Crash):
        await h.place(limit_buy())
    await h.crash()
    h.users.hook = None
    await h.restart()
    await h.settle()
    order = await only_order(h)
    assert order.state is State.NEW
    assert h.gateway.sent[order.order_id] == 1
    assert ledger(h, "RESERVE") == 1 and ledger(h, "RELEASE") == 0
    assert h.users.balance(ALICE, "USDT") == (D("99510"), D("490"))


async def test_an_interrupted_placement_too_old_to_resume_is_rejected_and_released(harness: Harness) -> None:
    h = harness
    h.users.hook = crash_at("reserve", "after")
    with pytest.raises(Crash):
        await h.place(limit_buy())
    await h.crash()
    h.users.hook = None
    h.settings = replace(h.settings, resume_window=0.0)  # the restart comes "too late" to send it now
    await asyncio.sleep(0.01)
    await h.restart()
    await h.settle()
    order = await only_order(h)
    assert order.status is Status.REJECTED and order.reject_reason == INTERRUPTED
    assert h.users.balance(ALICE, "USDT") == (D("100000"), D("0"))
    assert h.gateway.calls["submit"] == 0  # never sent
    assert ledger(h, "RESERVE") == ledger(h, "RELEASE") == 1


async def test_an_interrupted_placement_that_can_no_longer_be_funded_is_rejected(harness: Harness) -> None:
    h = harness
    h.users.hook = crash_at("reserve", "before")
    with pytest.raises(Crash):
        await h.place(limit_buy())
    await h.crash()
    h.users.hook = None
    h.users.balances[(ALICE, "USDT")][0] = D("10")  # spent elsewhere meanwhile
    await h.restart()
    await h.settle()
    order = await only_order(h)
    assert order.status is Status.REJECTED
    assert order.reject_reason.startswith(INTERRUPTED)
    assert h.gateway.calls["submit"] == 0


async def test_a_reservation_with_an_unknown_outcome_is_resolved_by_the_reconciler(harness: Harness) -> None:
    h = harness

    def lost(method: str, stage: str) -> None:
        if (method, stage) == ("reserve", "after"):
            raise Unavailable("connection reset")

    h.users.hook = lost
    with pytest.raises(Unavailable):
        await h.place(limit_buy())
    h.users.hook = None
    order = await only_order(h)
    assert order.state is State.PLACING
    await h.app.reconciler.tick()
    await h.settle()
    order = await h.order(order.order_id)
    assert order.state is State.NEW
    assert ledger(h, "RESERVE") == 1
    assert h.gateway.sent[order.order_id] == 1


@pytest.mark.parametrize("stage", ["before", "after"])
async def test_crash_around_the_submission_sends_the_order_exactly_once(harness: Harness, stage: str) -> None:
    # "before": SubmitOrder never reached the gateway; "after": the gateway journaled and sent it but
    # the answer was never recorded. Either way recovery submits again with the same client order id.
    h = harness
    h.gateway.hook = crash_at("submit", stage)
    with pytest.raises(Crash):
        await h.place(limit_buy())
    await h.crash()
    h.gateway.hook = None
    await h.restart()
    await h.settle()
    order = await only_order(h)
    assert order.state is State.NEW
    assert h.gateway.sent[order.order_id] == 1
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.FILLED
    assert h.users.balance(ALICE, "USDT") == (D("99510"), D("0"))
    assert h.users.balance(ALICE, "BTC") == (D("1.00999"), D("0"))


async def test_fills_while_the_service_is_down_are_applied_once_after_restart(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000"))
    await h.settle()
    await h.crash()
    # The exchange fills the order while the order service is down.
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.gateway.trade(order.order_id, "0.01", "48900.00")
    await h.restart()
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.FILLED
    assert final.filled_quote_quantity == D("979")
    assert final.average_price == D("48950")
    assert h.users.balance(ALICE, "USDT") == (D("100000") - D("979"), D("0"))
    assert ledger(h, "TRADE_DEBIT") == 2 and ledger(h, "RELEASE") == 1


@pytest.mark.parametrize("stage", ["before", "after"])
async def test_crash_around_a_settlement_settles_it_exactly_once(harness: Harness, stage: str) -> None:
    # "before": the fill is committed with its outbox row but SettleTrade never ran; "after": the user
    # service booked it but the outbox row was not deleted. The replay after restart is harmless.
    h = harness
    order = await h.place(limit_buy())
    await h.settle()
    h.users.hook = crash_at("settle", stage)
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.applied()
    await asyncio.sleep(0.05)  # let the outbox task reach the crash point
    await h.crash()
    h.users.hook = None
    await h.restart()
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.FILLED
    assert ledger(h, "TRADE_DEBIT") == ledger(h, "TRADE_CREDIT") == ledger(h, "FEE") == 1
    assert h.users.balance(ALICE, "USDT") == (D("99510"), D("0"))
    assert h.users.balance(ALICE, "BTC") == (D("1.00999"), D("0"))
    assert await h.app.store.pending_effects() == []


async def test_a_failed_batch_transaction_applies_nothing_and_is_applied_once_later(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000"))
    await h.settle()
    real_persist = executions_module.persist
    failures = [1]

    def failing_persist(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_persist(*args, **kwargs)  # the fill and outbox rows are written...
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("disk full")  # ...and then the transaction fails

    monkeypatch.setattr(executions_module, "persist", failing_persist)
    cursor_before = await h.app.store.get_cursor()
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()  # the consumer reconnects from its cursor and applies the batch again
    assert cursor_before < await h.app.store.get_cursor() == len(h.gateway.executions)
    assert (await h.order(order.order_id)).status is Status.FILLED
    fills = await h.app.queries.list_fills(h.alice, order.order_id)
    assert len(fills.fills) == 2
    assert ledger(h, "TRADE_DEBIT") == 2
    assert h.users.calls["settle"] == 2


async def test_an_execution_delivered_twice_is_applied_once(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000"))
    report = await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()
    # The same batch again (a reconnect that replays what was applied): nothing new.
    assert await h.app.executions.apply([report]) == 0
    # The same trade under a later sequence number (a duplicate the journal should never have):
    # skipped by fill id, though the cursor moves on.
    duplicate = replace(report, sequence=len(h.gateway.executions) + 1)
    assert await h.app.executions.apply([duplicate]) == 1
    await h.app.outbox.idle()
    order_now = await h.order(order.order_id)
    assert order_now.filled_quantity == D("0.01")
    assert h.users.calls["settle"] == 1


async def test_the_stream_breaking_resumes_from_the_cursor(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.03000"))
    await h.settle()
    await h.gateway.break_stream()
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()
    await h.gateway.break_stream()
    await h.gateway.trade(order.order_id, "0.02", "49000.00")
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.FILLED
    assert h.gateway.calls["stream"] >= 3
    assert ledger(h, "TRADE_DEBIT") == 2


async def test_crash_after_the_cancel_reached_the_exchange_ends_the_order_after_restart(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000"))
    await h.gateway.trade(order.order_id, "0.005", "49000.00")
    await h.settle()
    h.gateway.flowing.clear()
    h.gateway.hook = crash_at("cancel", "after")
    with pytest.raises(Crash):
        await h.app.cancel_order(h.alice, order.order_id, Deadline.after(5))
    await h.crash()
    h.gateway.hook = None
    h.gateway.flowing.set()
    await h.restart()
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.CANCELLED
    assert h.users.balance(ALICE, "USDT") == (D("100000") - D("245"), D("0"))
    assert ledger(h, "RELEASE") == 1


async def test_an_expiry_that_passed_while_down_is_carried_out_at_start(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy(expire_time_ms=h.app.core.clock() + 400))
    await h.crash()
    await asyncio.sleep(0.5)
    await h.restart()

    async def ended() -> None:
        while not (await h.order(order.order_id)).is_final:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(ended(), 5)
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.EXPIRED
    assert h.users.balance(ALICE, "USDT") == (D("100000"), D("0"))


async def test_a_crash_between_the_expiry_intent_and_the_cancel_still_expires(harness: Harness) -> None:
    h = harness
    h.gateway.hook = crash_at("cancel", "before")
    order = await h.place(limit_buy(expire_time_ms=h.app.core.clock() + 200))

    async def intent_written() -> None:
        while not (await h.order(order.order_id)).expire_requested:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(intent_written(), 5)
    await asyncio.sleep(0.05)
    await h.crash()
    await h.restart()

    async def ended() -> None:
        while not (await h.order(order.order_id)).is_final:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(ended(), 5)
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.EXPIRED
    assert h.users.balance(ALICE, "USDT") == (D("100000"), D("0"))


async def test_a_crash_between_the_reservation_and_the_insert_is_released_at_the_next_start(harness: Harness) -> None:
    # The INSERT and the reservation run at once: the process dies after the reservation committed
    # and before the INSERT did, leaving a reservation that no stored order refers to.
    h = harness
    store = h.app.core.store

    async def dies_before_the_insert_commits(fn, **kwargs):  # type: ignore[no-untyped-def]
        while not h.users.reservations:
            await asyncio.sleep(0)
        raise Crash("killed before the INSERT committed")

    store.write = dies_before_the_insert_commits  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await h.place(limit_buy())
    await h.crash()
    assert ledger(h, "RESERVE") == 1 and ledger(h, "RELEASE") == 0
    assert h.users.balance(ALICE, "USDT") == (D("99510"), D("490"))
    await h.restart()
    await h.settle()
    assert (await h.app.queries.list_orders(h.alice)).orders == []
    assert ledger(h, "RESERVE") == ledger(h, "RELEASE") == 1
    assert h.users.balance(ALICE, "USDT") == (D("100000"), D("0"))
    assert h.gateway.calls["submit"] == 0


async def test_recovery_releases_only_reservations_without_a_stored_order(harness: Harness) -> None:
    h = harness
    placed = await h.place(limit_buy())
    await h.settle()
    await h.crash()
    # An orphan made by the same process just after the placement (its INSERT never committed).
    orphan = new_id(ORDER_ID_PREFIX)
    await h.users.reserve_funds(orphan, ALICE, "USDT", D("10"), 1.0)
    app = await h.restart()
    await h.settle()
    assert h.users.reservations[orphan].remaining == 0
    assert h.users.reservations[placed.order_id].remaining == D("490")  # the stored order keeps its funds
    assert (await h.order(placed.order_id)).state is State.NEW
    assert await app.reconciler.release_orphans() == []  # nothing left to release
    assert ledger(h, "RELEASE") == 1


async def test_a_duplicate_client_order_id_releases_what_its_reservation_took(harness: Harness) -> None:
    h = harness
    first = await h.place(limit_buy(client_order_id="same"))
    again = await h.place(limit_buy(client_order_id="same"))
    await h.settle()
    assert again.order_id == first.order_id
    assert h.users.balance(ALICE, "USDT") == (D("99510"), D("490"))  # one order's reservation, not two
    assert h.gateway.sent[first.order_id] == 1


async def test_a_crash_after_the_answer_before_its_update_commits_records_the_same_answer_at_restart(
    harness: Harness,
) -> None:
    h = harness
    h.app.place_order.record_delay = 60.0  # the deferred UPDATE waits: the process dies before it commits
    answered = await h.place(limit_buy())
    assert answered.state is State.NEW and answered.exchange_order_id
    stored = await h.order(answered.order_id)
    assert stored.state is State.PLACING  # answered, not yet recorded
    await h.crash()
    await h.restart()
    await h.settle()
    recorded = await h.order(answered.order_id)
    assert recorded.state is State.NEW
    assert recorded.exchange_order_id == answered.exchange_order_id
    assert h.gateway.sent[answered.order_id] == 1
    assert ledger(h, "RESERVE") == 1 and ledger(h, "RELEASE") == 0


async def test_a_cancel_right_after_the_answer_has_the_answer_recorded_at_once(harness: Harness) -> None:
    h = harness
    h.app.place_order.record_delay = 60.0  # nothing else would commit the deferred UPDATE for a minute
    placed = await h.place(limit_buy())
    cancelled = await asyncio.wait_for(h.app.cancel_order(h.alice, placed.order_id, Deadline.after(30)), 10)
    assert cancelled.cancel_requested or cancelled.state is State.CANCELLED
    assert (await h.order(placed.order_id)).exchange_order_id == placed.exchange_order_id
