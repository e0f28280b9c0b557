"""The execution journal: once per fact, gap-free sequences, and resumable streams (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.journal import SqlJournal
from services.exchange_gateway.domain.model import (
    Anomaly,
    AnomalyKind,
    ExchangeEvent,
    ExecType,
    Fill,
    ForeignOrder,
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
from shared.db import Database, create_db_engine

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
    def __init__(self, url: str, **options):
        self.db = Database(create_db_engine(url), name="test")
        self.journal = SqlJournal(self.db, **options)
        self.journal.migrate()
        self.published: list = []
        self.anomalies: list = []
        self.foreign: list = []
        self.journal.on_commit = self.published.extend
        self.journal.on_anomalies = self.anomalies.extend
        self.journal.on_foreign = self.foreign.extend

    async def __aenter__(self) -> Opened:
        self.pending = await self.journal.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.journal.close()
        self.db.close()


async def recorded_anomalies(journal: SqlJournal) -> list[Anomaly]:
    """Every anomaly the journal holds, read two to a page."""
    found: list[Anomaly] = []
    after = 0
    while page := await journal.page_of_anomalies(after, 2):
        found.extend(anomaly for _, anomaly in page)
        after = page[-1][0]
    return found


@pytest.fixture
def db_path(new_db_url) -> str:
    """The journal's database, on each engine in turn."""
    return new_db_url("gateway")


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
            tx.add_execution(
                recording.lifecycle.accepted(new_order("a"), exchange_order_id=1, time_ms=1, now_ms=1).execution
            )
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


def foreign_event(exec_type: ExecType, status: OrderStatus, cum: str, *, trade_id: int = 0) -> ExchangeEvent:
    """A report about an order the gateway did not place (a person on the exchange's web site)."""
    traded = fill(trade_id, cum) if exec_type is ExecType.TRADE else None
    return ExchangeEvent(
        "web_1", 99, "ETHUSDT", exec_type, status, D(cum), 50, traded, "", Side.SELL, "LIMIT", D("3100"), D("2")
    )


async def test_a_trade_key_that_comes_again_with_other_content_is_an_anomaly_and_no_execution(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        for cid in ("a", "b"):
            await journal.transact(lambda tx, cid=cid: recording.insert_order(tx, new_order(cid, "2")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("a", 1, "1", "1"), now_ms=9))
        sequence = journal.last_sequence
        # The exchange reports trade 1 again, now for order b (its ids started again from 1).
        for _ in range(3):  # the stream, the order's answer and myTrades: recorded once
            applied = await journal.transact(
                lambda tx: recording.apply_event(tx, trade_event("b", 1, "1", "1"), now_ms=10)
            )
            assert applied.order is not None and applied.order.executed_qty == D(0) and not applied.complete
        assert journal.last_sequence == sequence + 1  # only b's NEW: the trade is held back
        assert [e.exec_type for e in await journal.executions_after(sequence, 10)] == [ExecType.NEW]
        (anomaly,) = await recorded_anomalies(journal)
        assert (anomaly.kind, anomaly.symbol, anomaly.trade_id, anomaly.client_order_id) == (
            AnomalyKind.TRADE_KEY_CLASH,
            "BTCUSDT",
            1,
            "b",
        )
        assert "client_order_id=a" in anomaly.journaled and "client_order_id=b" in anomaly.received
        assert anomaly.first_seen_ms == 10
        assert opened.anomalies == [anomaly]  # reported once, after the commit


async def test_the_same_order_reporting_a_trade_key_with_another_price_is_a_clash(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("a", 1, "1", "1"), now_ms=9))
        other = Fill(1, D("1"), D("49999"), D("49999"), D("0.001"), "BTC", False, 1001)
        snap = OrderSnapshot("a", 7, "BTCUSDT", OrderStatus.FILLED, D("2"), D("99999"), 5, fills=(other,))
        await journal.transact(lambda tx: recording.apply_snapshot(tx, snap, None, now_ms=11))
        (anomaly,) = await recorded_anomalies(journal)
        assert "price=50000" in anomaly.journaled and "price=49999" in anomaly.received


async def test_an_identical_repeat_of_a_trade_is_a_silent_duplicate_on_every_path(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        event = trade_event("a", 1, "1", "1")
        await journal.transact(lambda tx: recording.apply_event(tx, event, now_ms=9))
        sequence = journal.last_sequence
        snap = OrderSnapshot("a", 7, "BTCUSDT", OrderStatus.PARTIALLY_FILLED, D("1"), D("50000"), 5)
        await journal.transact(lambda tx: recording.apply_event(tx, event, now_ms=10))
        await journal.transact(lambda tx: recording.apply_snapshot(tx, snap, [fill(1, "1")], now_ms=11))
        assert journal.last_sequence == sequence
        assert await recorded_anomalies(journal) == [] and opened.anomalies == []


async def test_the_recent_trade_hint_only_recognises_the_same_trade(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        for cid in ("a", "b"):
            await journal.transact(lambda tx, cid=cid: recording.insert_order(tx, new_order(cid, "2")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("a", 1, "1", "1"), now_ms=9))
        a, b = journal.cached_order("a"), journal.cached_order("b")
        assert a is not None and b is not None
        assert recording.already_known(a, trade_event("a", 1, "1", "1"), journal.journaled_trade)
        # The same key for another order is not known: it must reach the journal, which records the clash.
        assert not recording.already_known(b, trade_event("b", 1, "1", "1"), journal.journaled_trade)


async def test_an_open_order_the_exchange_forgot_expires_after_its_trades_with_an_anomaly(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("unknown", "2")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("a", 1, "0.5", "0.5"), now_ms=9))
        answer = "-2013: Order does not exist."
        for _ in range(2):
            ended = await journal.transact(lambda tx: recording.forgotten(tx, "a", answer, now_ms=20))
        assert ended is not None and ended.status is OrderStatus.EXPIRED
        assert ended.reject_reason.startswith("EXCHANGE_FORGOT:") and answer in ended.reject_reason
        rows = await journal.executions_after(0, 10)
        assert [(e.exec_type, e.cum_qty) for e in rows] == [
            (ExecType.NEW, D(0)),
            (ExecType.TRADE, D("0.5")),
            (ExecType.EXPIRED, D("0.5")),
        ]
        # An order whose submission is still UNKNOWN is the resolver's business, not forgotten.
        untouched = await journal.transact(lambda tx: recording.forgotten(tx, "unknown", answer, now_ms=20))
        assert untouched is not None and untouched.status is OrderStatus.UNKNOWN
        (anomaly,) = await recorded_anomalies(journal)
        assert (anomaly.kind, anomaly.client_order_id, anomaly.trade_id) == (AnomalyKind.EXCHANGE_FORGOT_ORDER, "a", 0)
        assert "status=PARTIALLY_FILLED" in anomaly.journaled and anomaly.received == answer


def end_event(cid: str, exec_type: ExecType, cum: str) -> ExchangeEvent:
    return ExchangeEvent(cid, 7, "BTCUSDT", exec_type, OrderStatus(exec_type.value), D(cum), 6)


async def test_a_move_the_table_refuses_is_an_anomaly_and_a_late_trade_still_journals_its_money(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("a", 1, "0.5", "0.5"), now_ms=9))
        await journal.transact(lambda tx: recording.apply_event(tx, end_event("a", ExecType.CANCELED, "0.5"), now_ms=9))
        # The end's answer, with the trade it reports, again: duplicates, not refused moves.
        snap = OrderSnapshot("a", 7, "BTCUSDT", OrderStatus.CANCELED, D("0.5"), D("25000"), 5, fills=(fill(1, "0.5"),))
        await journal.transact(lambda tx: recording.apply_snapshot(tx, snap, None, now_ms=10))
        assert await recorded_anomalies(journal) == []
        sequence = journal.last_sequence
        for _ in range(3):  # a trade after the end, reported by the stream, the answer and myTrades
            applied = await journal.transact(
                lambda tx: recording.apply_event(tx, trade_event("a", 2, "0.25", "0.75"), now_ms=11)
            )
            assert applied.order is not None and applied.order.status is OrderStatus.CANCELED
            assert applied.order.executed_qty == D("0.75")
        for _ in range(2):  # another end after the end: refused, nothing journaled
            applied = await journal.transact(
                lambda tx: recording.apply_event(tx, end_event("a", ExecType.EXPIRED, "0.75"), now_ms=12)
            )
            assert applied.order is not None and applied.order.status is OrderStatus.CANCELED
        late = await journal.executions_after(sequence, 10)
        assert [(e.exec_type, e.trade_id, e.order_status, e.cum_qty) for e in late] == [
            (ExecType.TRADE, 2, OrderStatus.CANCELED, D("0.75"))
        ]
        anomalies = await recorded_anomalies(journal)
        assert [(a.kind, a.client_order_id, a.trade_id, a.journaled) for a in anomalies] == [
            (AnomalyKind.REFUSED_TRANSITION, "a", 2, "status=CANCELED"),
            (AnomalyKind.REFUSED_TRANSITION, "a", 0, "status=CANCELED"),
        ]
        assert "TRADE" in anomalies[0].received and "EXPIRED" in anomalies[1].received
        assert opened.anomalies == anomalies  # each reported once, after its commit


async def test_reports_about_orders_the_gateway_did_not_place_update_the_foreign_record_only(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        steps = [
            foreign_event(ExecType.NEW, OrderStatus.NEW, "0"),
            foreign_event(ExecType.TRADE, OrderStatus.PARTIALLY_FILLED, "0.5", trade_id=3),
            foreign_event(ExecType.TRADE, OrderStatus.FILLED, "2", trade_id=4),
            foreign_event(ExecType.NEW, OrderStatus.NEW, "0"),  # a late duplicate cannot reopen it
        ]
        for event in steps:
            applied = await journal.transact(lambda tx, e=event: recording.apply_event(tx, e, now_ms=30))
            assert applied.order is None
        assert journal.last_sequence == 0 and await journal.executions_after(0, 10) == []
        (order,) = await journal.foreign_orders()
        assert (order.symbol, order.client_order_id, order.exchange_order_id, order.side, order.type) == (
            "ETHUSDT",
            "web_1",
            99,
            Side.SELL,
            "LIMIT",
        )
        assert (order.price, order.quantity, order.executed_qty) == (D("3100"), D("2"), D("2"))
        assert order.status is OrderStatus.FILLED and not order.is_open
        assert await journal.foreign_orders(open_only=True) == []
        assert [new for _, new in opened.foreign] == [True, False, False]  # new once; the late NEW changed nothing


async def test_a_report_with_a_known_client_order_id_but_another_order_id_is_foreign(db_path):
    async with Opened(db_path) as opened:
        journal = opened.journal
        await journal.transact(lambda tx: recording.insert_order(tx, new_order("a", "2")))
        await journal.transact(lambda tx: recording.apply_event(tx, trade_event("a", 1, "1", "1"), now_ms=9))
        sequence = journal.last_sequence
        reused = ExchangeEvent("a", 8, "BTCUSDT", ExecType.NEW, OrderStatus.NEW, D(0), 12)
        applied = await journal.transact(lambda tx: recording.apply_event(tx, reused, now_ms=12))
        assert applied.order is None and journal.last_sequence == sequence
        assert [(o.client_order_id, o.exchange_order_id) for o in await journal.foreign_orders()] == [("a", 8)]


def foreign(
    cid: str, exchange_order_id: int, symbol: str = "BTCUSDT", *, status: OrderStatus = OrderStatus.NEW
) -> OrderSnapshot:
    """An order of the account's as the exchange reports it, placed by someone else."""
    return OrderSnapshot(cid, exchange_order_id, symbol, status, D(0), D(0), 1, side=Side.SELL, order_type="LIMIT")


async def test_foreign_orders_are_listed_a_page_at_a_time_in_the_order_they_were_found(db_path):
    # Three found in the same millisecond: the symbol, the exchange's id and the client id order them.
    found = [
        (foreign("web_c", 30, "ETHUSDT"), 100),
        (foreign("web_a", 10), 100),
        (foreign("web_b", 20, status=OrderStatus.FILLED), 100),
        (foreign("web_d", 5), 50),
        (foreign("web_e", 40, status=OrderStatus.CANCELED), 200),
    ]
    async with Opened(db_path) as opened:
        journal = opened.journal
        for snap, now_ms in found:
            seen = ForeignOrder.seen_in(snap, now_ms=now_ms)
            await journal.transact(lambda tx, seen=seen: recording.note_foreign(tx, seen))

        async def listed(size: int, *, open_only: bool = False) -> list[list[str]]:
            pages: list[list[str]] = []
            after = None
            while page := await journal.page_of_foreign_orders(after, size, open_only=open_only):
                pages.append([o.client_order_id for o in page])
                after = page[-1].position
            return pages

        assert await listed(2) == [["web_d", "web_a"], ["web_b", "web_c"], ["web_e"]]
        assert await listed(10) == [["web_d", "web_a", "web_b", "web_c", "web_e"]]
        assert await listed(2, open_only=True) == [["web_d", "web_a"], ["web_c"]]
