"""recording.foreign_cancel: what a cancel of a foreign order leaves in the journal.

A cancel that lost a race with an earlier, successful one (it was started from an open-orders
answer listed before that cancel) fails with "unknown order"; it must not turn the recorded
cancellation into a failure.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.journal import SqlJournal
from services.exchange_gateway.domain.model import ForeignOrder, OrderSnapshot, OrderStatus, Side
from services.exchange_gateway.service import recording
from shared.db import Database, create_db_engine

D = Decimal


def snapshot(status: OrderStatus) -> OrderSnapshot:
    return OrderSnapshot(
        "web_1",
        77,
        "BTCUSDT",
        status,
        D("0"),
        D("0"),
        1,
        side=Side.BUY,
        order_type="LIMIT",
        price=D("48000"),
        quantity=D("0.01"),
    )


@pytest.fixture
async def journal(tmp_path):
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'gw.db'}"), name="test")
    journal = SqlJournal(db)
    journal.migrate()
    await journal.open()
    yield journal
    await journal.close()
    db.close()


async def test_a_failed_cancel_after_a_successful_one_keeps_the_cancellation(journal) -> None:
    found = ForeignOrder.seen_in(snapshot(OrderStatus.NEW), now_ms=10)
    await journal.transact(lambda tx: recording.note_foreign(tx, found))
    cancelled = snapshot(OrderStatus.CANCELED)
    await journal.transact(lambda tx: recording.foreign_cancel(tx, found.key, cancelled, "", now_ms=20))
    late = await journal.transact(
        lambda tx: recording.foreign_cancel(tx, found.key, None, "-2011: Unknown order sent.", now_ms=30)
    )
    assert late is not None
    assert (late.status, late.is_open, late.cancel_time_ms, late.cancel_error) == (OrderStatus.CANCELED, False, 20, "")
    (stored,) = await journal.foreign_orders()
    assert (stored.cancel_time_ms, stored.cancel_error) == (20, "")


async def test_a_failed_cancel_of_an_open_order_is_recorded_with_its_reason(journal) -> None:
    found = ForeignOrder.seen_in(snapshot(OrderStatus.NEW), now_ms=10)
    await journal.transact(lambda tx: recording.note_foreign(tx, found))
    failed = await journal.transact(
        lambda tx: recording.foreign_cancel(tx, found.key, None, "-1003: too many requests", now_ms=30)
    )
    assert failed is not None and failed.is_open and failed.cancel_time_ms == 0
    assert failed.cancel_error == "-1003: too many requests"
