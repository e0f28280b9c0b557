"""The execution journal: once per fact, gap-free sequences, and resumable streams (SQLite in tmp_path)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.journal import SqlJournal
from services.exchange_gateway.domain.model import (
    ExchangeEvent,
    ExecType,
    Fill,
    Order,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.executions import ExecutionHub
from shared.db import Database, create_sqlite_engine

D = Decimal


def new_order(cid: str, qty: str = "1") -> Order:
    request = OrderRequest(cid, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, D(qty), D("50000"), None)
    return Order.from_request(request, now_ms=1, request_time_ms=1, recv_window_ms=5000)


def fill(trade_id: int, qty: str) -> Fill:
    return Fill(trade_id, D(qty), D("50000"), D(qty) * 50000, D("0.001"), "BTC", False, 1000 + trade_id)


def trade_event(cid: str, trade_id: int, qty: str, cum: str) -> ExchangeEvent:
    return ExchangeEvent(
        cid, 7, "BTCUSDT", ExecType.TRADE, OrderStatus.PARTIALLY_FILLED, D(cum), 5, fill(trade_id, qty)
    )


class Opened:
    def __init__(self, path, **options):
        self.db = Database(create_sqlite_engine(f"sqlite:///{path}"), name="test")
        self.journal = SqlJournal(self.db, **options)
        self.journal.create_schema()
        self.published: list = []
        self.journal.on_commit = self.published.extend

    async def __aenter__(self) -> Opened:
        self.pending = await self.journal.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.journal.close()
        self.db.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "gateway.db"


async def test_every_fact_is_journaled_once_under_gap_free_sequences(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        for cid in ("a", "b"):
            await journal.transact(lambda tx, cid=cid: recording.insert_order(tx, new_order(cid, "10")))
        # Many reporters at once, every fact reported three times (stream, response, reconciliation).
        jobs = []
        for _ in range(3):
            for cid, base in (("a", 100), ("b", 200)):
                for i in range(5):
                    event = trade_event(cid, base + i, "1", str(i + 1))
                    jobs.append(journal.transact(lambda tx, e=event: recording.apply_event(tx, e, now_ms=9)))
        await asyncio.gather(*jobs)
        rows = await journal.executions_after(0, 1000)
        assert [e.sequence for e in rows] == list(range(1, len(rows) + 1))
        keys = [e.dedup_key for e in rows]
        assert len(keys) == len(set(keys))
        # One NEW per order (journaled before its first trade) and one TRADE per trade id.
        assert sorted((e.client_order_id, e.exec_type.value) for e in rows if e.exec_type is ExecType.NEW) == [
            ("a", "NEW"),
            ("b", "NEW"),
        ]
        assert sorted(e.trade_id for e in rows if e.exec_type is ExecType.TRADE) == [*range(100, 105), *range(200, 205)]
        order = await journal.get_order("a")
        assert order is not None and order.executed_qty == D(5) and order.status is OrderStatus.PARTIALLY_FILLED
        assert [e.sequence for e in opened.published] == [e.sequence for e in rows]
        assert journal.batches < len(jobs)  # writes were batched


async def test_cumulative_figures_are_the_journals_running_sums(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        # The exchange's second trade arrives before the first (a gap): cumulative follows the journal.
        second = trade_event("a", 2, "1.5", "2")
        applied = await journal.transact(lambda tx: recording.apply_event(tx, second, now_ms=9))
        assert not applied.complete  # the exchange says 2 filled, the journal has 1.5
        first = trade_event("a", 1, "0.5", "0.5")
        await journal.transact(lambda tx: recording.apply_event(tx, first, now_ms=9))
        trades = [e for e in await journal.executions_after(0, 100) if e.exec_type is ExecType.TRADE]
        assert [(e.trade_id, e.cum_qty, e.order_status) for e in trades] == [
            (2, D("1.5"), OrderStatus.PARTIALLY_FILLED),
            (1, D("2"), OrderStatus.FILLED),
        ]


async def test_a_cancel_waits_for_missing_trades(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        canceled = OrderSnapshot("a", 7, "BTCUSDT", OrderStatus.CANCELED, D("0.5"), D("25000"), 10)
        applied = await journal.transact(lambda tx: recording.apply_snapshot(tx, canceled, None, now_ms=9))
        assert not applied.complete and applied.order is not None and applied.order.status is OrderStatus.NEW
        applied = await journal.transact(lambda tx: recording.apply_snapshot(tx, canceled, [fill(1, "0.5")], now_ms=9))
        assert applied.complete and applied.order is not None and applied.order.status is OrderStatus.CANCELED
        kinds = [e.exec_type for e in await journal.executions_after(0, 100)]
        assert kinds == [ExecType.NEW, ExecType.TRADE, ExecType.CANCELED]


async def test_a_failing_function_does_not_undo_the_rest_of_its_batch(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a")))

        def broken(tx):
            tx.add_execution(recording.lifecycle.accepted(new_order("a"), exchange_order_id=1, time_ms=1, now_ms=1)[1])
            raise RuntimeError("boom")

        results = await asyncio.gather(
            journal.transact(broken),
            journal.transact(lambda tx: recording.reject(tx, "a", "refused", now_ms=5)),
            return_exceptions=True,
        )
        assert isinstance(results[0], RuntimeError)
        rows = await journal.executions_after(0, 100)
        assert [(e.sequence, e.exec_type) for e in rows] == [(1, ExecType.REJECTED)]


async def test_the_journal_survives_a_restart(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        for cid in ("open", "done"):
            await journal.transact(lambda tx, cid=cid: recording.insert_order(tx, new_order(cid)))
        await journal.transact(lambda tx: recording.reject(tx, "done", "refused", now_ms=5))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("open", 1, "0.25", "0.25"), now_ms=6))
    async with Opened(db_path) as reopened:
        assert reopened.journal.last_sequence == 3
        assert [o.client_order_id for o in reopened.pending] == ["open"]
        assert reopened.pending[0].executed_qty == D("0.25")
        # Replaying the same facts after the restart adds nothing.
        again = trade_event("open", 1, "0.25", "0.25")
        await reopened.journal.transact(lambda tx: recording.apply_event(tx, again, now_ms=7))
        assert reopened.journal.last_sequence == 3


async def test_a_stream_hands_over_from_replay_to_live_without_gap_or_duplicate(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        hub = ExecutionHub(journal.executions_after, last_sequence=0, buffer_size=8, page=3)
        journal.on_commit = hub.publish
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "1000")))
        for i in range(20):  # more than the buffer holds: the start must come from the database
            await journal.transact(
                lambda tx, i=i: recording.apply_event(tx, trade_event("a", i, "1", str(i + 1)), now_ms=1)
            )
        seen: list[int] = []

        async def consume(after: int) -> None:
            async for execution in hub.stream(after):
                seen.append(execution.sequence)
                if execution.sequence == 41:
                    return

        consumer = asyncio.create_task(consume(5))
        for i in range(20, 40):  # published while the consumer replays
            await journal.transact(
                lambda tx, i=i: recording.apply_event(tx, trade_event("a", i, "1", str(i + 1)), now_ms=1)
            )
            await asyncio.sleep(0)
        await asyncio.wait_for(consumer, 5)
        assert seen == list(range(6, 42))
        hub.close()


async def test_the_cache_keeps_open_orders_and_only_the_latest_final_ones(db_path):
    async with Opened(db_path, max_final_orders=2) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("open")))
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("filled", "1")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("filled", 1, "1", "1"), now_ms=2))
        for cid in ("r1", "r2", "r3"):
            await journal.transact(lambda tx, cid=cid: recording.insert_order(tx, new_order(cid)))
            await journal.transact(lambda tx, cid=cid: recording.reject(tx, cid, "refused", now_ms=3))
        assert journal.cached_order("open") is not None
        assert [journal.cached_order(c) is not None for c in ("filled", "r1", "r2", "r3")] == [False, False, True, True]
        assert len(journal.cache) == 3
        sequence = journal.last_sequence

        # Evicted orders come from the database, and nothing that depends on them changes.
        filled = await journal.get_order("filled")
        assert filled is not None and filled.status is OrderStatus.FILLED and filled.executed_qty == D(1)
        existing, created = await journal.transact(lambda tx: recording.insert_order(tx, new_order("filled", "1")))
        assert not created and existing.status is OrderStatus.FILLED  # a retried SubmitOrder gets the journaled order
        again = await journal.transact(
            lambda tx: recording.apply_event(tx, trade_event("filled", 1, "1", "1"), now_ms=4)
        )
        assert again.order is not None and again.order.executed_qty == D(1)
        await journal.transact(lambda tx: recording.reject(tx, "r1", "refused again", now_ms=5))
        assert journal.last_sequence == sequence  # the duplicate reports were not journaled again


async def test_a_settled_check_runs_after_the_batch_in_flight_has_committed(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        in_db, release = threading.Event(), threading.Event()

        def insert_slowly(tx):
            in_db.set()
            release.wait(5)
            return recording.insert_order(tx, new_order("a"))

        first = journal.submit(insert_slowly)
        await asyncio.to_thread(in_db.wait, 5)  # that batch is now on the database thread
        ran: list[str] = []

        def write_again(tx):
            ran.append("fn")
            return recording.insert_order(tx, new_order("a"))

        second = journal.submit(
            write_again, settled=lambda: (o, False) if (o := journal.cached_order("a")) is not None else None
        )
        release.set()
        _, created = await first
        order, created_again = await second
        assert created and not created_again and order.client_order_id == "a"
        assert ran == []  # answered from the committed cache: no second transaction
        assert (journal.batches, journal.settled) == (1, 1)

        # A check that finds nothing settled leaves the function to the database.
        await journal.transact(lambda tx: recording.reject(tx, "a", "refused", now_ms=3), settled=lambda: None)
        assert journal.batches == 2 and journal.last_sequence == 1
