"""The gateway's SQLite journal: orders before they are sent, and every execution once.

Four tables:
- ``gateway_orders``: one row per client_order_id, written before the order is sent and updated
  with everything learned since.
- ``gateway_executions``: the execution journal. ``sequence`` is 1, 2, 3... with no gap: it is
  assigned inside the same BEGIN IMMEDIATE transaction as the insert (one writer at a time), and a
  duplicate (same ``dedup_key``) is skipped without using up a number. ``dedup_key`` is
  ``T|symbol|trade_id`` for trades and ``X|client_order_id|type`` for the other types.
- ``gateway_anomalies``: what the exchange reported against the journal (a trade key that came
  again with other content, an open order the exchange no longer knows), one row per ``dedup_key``.
- ``gateway_foreign_orders``: orders on the account that the gateway did not place, keyed by
  (symbol, exchange order id, client order id); never executions, so never on the stream.

After each commit the new executions go to ``on_commit`` (the stream), newly recorded anomalies to
``on_anomalies`` and the foreign orders written (with whether each is new) to ``on_foreign``.

Writes are batched: ``transact`` queues a function; one task runs everything queued in one
transaction on the database writer thread, each function inside a SAVEPOINT so that one failing
function does not undo the others, commits once (one fsync for the batch), then publishes the new
executions in sequence order and answers the callers. A queued function may come with a
``settled`` check, run on the event loop when the writer takes it, i.e. after every earlier batch
has committed: if the committed state already holds what the function would write (a user data
stream report of what the order's answer just journaled), the caller gets that answer and the
database is not touched. The check is only a shortcut; the dedup keys in the database decide.

Each batch runs through ``shared.db.Database.write``: on its writer thread, over the one connection
that thread keeps, with BEGIN IMMEDIATE and COMMIT sent to the sqlite3 connection directly.

The order cache holds every order that is not final and the ``max_final_orders`` that most
recently became final; everything else is read from the database when needed. Decimals are stored as exact text (the
exchange's values can have more places than the ledger's 8, so ``shared.db.ExactDecimal`` would
not do); they are never summed or sorted in SQL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.types import TypeDecorator

from services.exchange_gateway.domain.model import (
    FINAL_STATUSES,
    Anomaly,
    AnomalyKind,
    ExecType,
    Execution,
    ForeignOrder,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    TradeIdentity,
)
from shared.db import Database, driver_connection

T = TypeVar("T")
log = logging.getLogger("exchange_gateway.journal")


class DecimalText(TypeDecorator[Decimal]):
    """A Decimal stored as exact plain text (no exponent, no rounding)."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"DecimalText takes Decimal, got {type(value).__name__}")
        return format(value, "f")

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


metadata = MetaData()

orders = Table(
    "gateway_orders",
    metadata,
    Column("client_order_id", String(36), primary_key=True),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("type", String(20), nullable=False),
    Column("time_in_force", String(8)),
    Column("quantity", DecimalText, nullable=False),
    Column("price", DecimalText),
    Column("stop_price", DecimalText),
    Column("status", String(24), nullable=False),
    Column("exchange_order_id", BigInteger, nullable=False, default=0),
    Column("executed_qty", DecimalText, nullable=False),
    Column("cum_quote_qty", DecimalText, nullable=False),
    Column("reject_reason", String(500), nullable=False, default=""),
    Column("create_time_ms", BigInteger, nullable=False),
    Column("update_time_ms", BigInteger, nullable=False),
    Column("request_time_ms", BigInteger, nullable=False),
    Column("recv_window_ms", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("reported_new", Boolean, nullable=False, default=False),
    Column("final", Boolean, nullable=False, default=False),
    Index("ix_gateway_orders_open", "final"),
)

executions = Table(
    "gateway_executions",
    metadata,
    Column("sequence", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("dedup_key", String(120), nullable=False, unique=True),
    Column("client_order_id", String(36), nullable=False, index=True),
    Column("exchange_order_id", BigInteger, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("exec_type", String(16), nullable=False),
    Column("order_status", String(24), nullable=False),
    Column("trade_id", BigInteger, nullable=False),
    Column("last_qty", DecimalText, nullable=False),
    Column("last_price", DecimalText, nullable=False),
    Column("last_quote_qty", DecimalText, nullable=False),
    Column("cum_qty", DecimalText, nullable=False),
    Column("cum_quote_qty", DecimalText, nullable=False),
    Column("commission", DecimalText, nullable=False),
    Column("commission_asset", String(32), nullable=False),
    Column("is_maker", Boolean, nullable=False),
    Column("reject_reason", String(500), nullable=False),
    Column("transaction_time_ms", BigInteger, nullable=False),
    Column("journal_time_ms", BigInteger, nullable=False),
)

anomalies = Table(
    "gateway_anomalies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedup_key", String(200), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("trade_id", BigInteger, nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("journaled", String(500), nullable=False),
    Column("received", String(500), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
)

foreign_orders = Table(
    "gateway_foreign_orders",
    metadata,
    Column("symbol", String(32), primary_key=True),
    Column("exchange_order_id", BigInteger, primary_key=True),
    Column("client_order_id", String(64), primary_key=True),
    Column("side", String(8), nullable=False),
    Column("type", String(32), nullable=False),
    Column("price", DecimalText, nullable=False),
    Column("quantity", DecimalText, nullable=False),
    Column("executed_qty", DecimalText, nullable=False),
    Column("status", String(24), nullable=False),
    Column("is_open", Boolean, nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("cancel_time_ms", BigInteger, nullable=False),
    Column("cancel_error", String(500), nullable=False),
    Index("ix_gateway_foreign_orders_open", "is_open"),
)

ORDER_COLUMNS = tuple(c.name for c in orders.columns)
EXECUTION_COLUMNS = tuple(c.name for c in executions.columns)
ANOMALY_COLUMNS = tuple(c.name for c in anomalies.columns if c.name != "id")
FOREIGN_COLUMNS = tuple(c.name for c in foreign_orders.columns)

# The hot statements go straight to the DB-API cursor of the transaction SQLAlchemy opened (BEGIN
# IMMEDIATE): SQLAlchemy Core cost ~0.35 ms per statement here, several times SQLite's own cost.
_SELECT_ORDER = f"SELECT {', '.join(ORDER_COLUMNS)} FROM gateway_orders WHERE client_order_id = ?"
_SELECT_OPEN_ORDERS = f"SELECT {', '.join(ORDER_COLUMNS)} FROM gateway_orders WHERE final = 0"
_UPSERT_ORDER = (
    f"INSERT INTO gateway_orders ({', '.join(ORDER_COLUMNS)}) VALUES ({', '.join('?' * len(ORDER_COLUMNS))}) "
    "ON CONFLICT(client_order_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ORDER_COLUMNS if c not in ("client_order_id", "create_time_ms"))
)
_INSERT_EXECUTION = (
    f"INSERT INTO gateway_executions ({', '.join(EXECUTION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(EXECUTION_COLUMNS))}) ON CONFLICT(dedup_key) DO NOTHING"
)
_SELECT_EXECUTIONS = (
    f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM gateway_executions WHERE sequence > ? ORDER BY sequence LIMIT ?"
)
_LAST_SEQUENCE = "SELECT MAX(sequence) FROM gateway_executions"
_SELECT_EXECUTION_BY_KEY = f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM gateway_executions WHERE dedup_key = ?"
_INSERT_ANOMALY = (
    f"INSERT INTO gateway_anomalies ({', '.join(ANOMALY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ANOMALY_COLUMNS))}) ON CONFLICT(dedup_key) DO NOTHING"
)
_SELECT_ANOMALIES = f"SELECT {', '.join(ANOMALY_COLUMNS)} FROM gateway_anomalies ORDER BY id"
_SELECT_FOREIGN = (
    f"SELECT {', '.join(FOREIGN_COLUMNS)} FROM gateway_foreign_orders "
    "WHERE symbol = ? AND exchange_order_id = ? AND client_order_id = ?"
)
_SELECT_FOREIGN_ALL = (
    f"SELECT {', '.join(FOREIGN_COLUMNS)} FROM gateway_foreign_orders ORDER BY first_seen_ms, symbol, exchange_order_id"
)
_SELECT_FOREIGN_OPEN = (
    f"SELECT {', '.join(FOREIGN_COLUMNS)} FROM gateway_foreign_orders WHERE is_open = 1 "
    "ORDER BY first_seen_ms, symbol, exchange_order_id"
)
_UPSERT_FOREIGN = (
    f"INSERT INTO gateway_foreign_orders ({', '.join(FOREIGN_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(FOREIGN_COLUMNS))}) "
    "ON CONFLICT(symbol, exchange_order_id, client_order_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in FOREIGN_COLUMNS
        if c not in ("symbol", "exchange_order_id", "client_order_id", "first_seen_ms")
    )
)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _order_values(order: Order) -> tuple[Any, ...]:
    return (
        order.client_order_id,
        order.symbol,
        order.side.value,
        order.type.value,
        order.time_in_force.value if order.time_in_force else None,
        _text(order.quantity),
        _text(order.price),
        _text(order.stop_price),
        order.status.value,
        order.exchange_order_id,
        _text(order.executed_qty),
        _text(order.cum_quote_qty),
        order.reject_reason[:500],
        order.create_time_ms,
        order.update_time_ms,
        order.request_time_ms,
        order.recv_window_ms,
        int(order.cancel_requested),
        int(order.reported_new),
        int(order.status in FINAL_STATUSES),
    )


def _order_from_row(row: tuple[Any, ...]) -> Order:
    m = dict(zip(ORDER_COLUMNS, row, strict=True))
    return Order(
        client_order_id=m["client_order_id"],
        symbol=m["symbol"],
        side=Side(m["side"]),
        type=OrderType(m["type"]),
        time_in_force=TimeInForce(m["time_in_force"]) if m["time_in_force"] else None,
        quantity=Decimal(m["quantity"]),
        price=_dec(m["price"]),
        stop_price=_dec(m["stop_price"]),
        status=OrderStatus(m["status"]),
        exchange_order_id=int(m["exchange_order_id"]),
        executed_qty=Decimal(m["executed_qty"]),
        cum_quote_qty=Decimal(m["cum_quote_qty"]),
        reject_reason=m["reject_reason"],
        create_time_ms=int(m["create_time_ms"]),
        update_time_ms=int(m["update_time_ms"]),
        request_time_ms=int(m["request_time_ms"]),
        recv_window_ms=int(m["recv_window_ms"]),
        cancel_requested=bool(m["cancel_requested"]),
        reported_new=bool(m["reported_new"]),
    )


def _execution_values(e: Execution) -> tuple[Any, ...]:
    return (
        e.sequence,
        e.dedup_key,
        e.client_order_id,
        e.exchange_order_id,
        e.symbol,
        e.side.value,
        e.exec_type.value,
        e.order_status.value,
        e.trade_id,
        _text(e.last_qty),
        _text(e.last_price),
        _text(e.last_quote_qty),
        _text(e.cum_qty),
        _text(e.cum_quote_qty),
        _text(e.commission),
        e.commission_asset,
        int(e.is_maker),
        e.reject_reason[:500],
        e.transaction_time_ms,
        e.journal_time_ms,
    )


def _execution_from_row(row: tuple[Any, ...]) -> Execution:
    m = dict(zip(EXECUTION_COLUMNS, row, strict=True))
    return Execution(
        sequence=int(m["sequence"]),
        client_order_id=m["client_order_id"],
        exchange_order_id=int(m["exchange_order_id"]),
        symbol=m["symbol"],
        side=Side(m["side"]),
        exec_type=ExecType(m["exec_type"]),
        order_status=OrderStatus(m["order_status"]),
        trade_id=int(m["trade_id"]),
        last_qty=Decimal(m["last_qty"]),
        last_price=Decimal(m["last_price"]),
        last_quote_qty=Decimal(m["last_quote_qty"]),
        cum_qty=Decimal(m["cum_qty"]),
        cum_quote_qty=Decimal(m["cum_quote_qty"]),
        commission=Decimal(m["commission"]),
        commission_asset=m["commission_asset"],
        is_maker=bool(m["is_maker"]),
        reject_reason=m["reject_reason"],
        transaction_time_ms=int(m["transaction_time_ms"]),
        journal_time_ms=int(m["journal_time_ms"]),
    )


def _anomaly_values(a: Anomaly) -> tuple[Any, ...]:
    return (
        a.dedup_key,
        a.kind.value,
        a.symbol,
        a.trade_id,
        a.client_order_id,
        a.journaled[:500],
        a.received[:500],
        a.first_seen_ms,
    )


def _anomaly_from_row(row: tuple[Any, ...]) -> Anomaly:
    m = dict(zip(ANOMALY_COLUMNS, row, strict=True))
    return Anomaly(
        kind=AnomalyKind(m["kind"]),
        symbol=m["symbol"],
        client_order_id=m["client_order_id"],
        trade_id=int(m["trade_id"]),
        journaled=m["journaled"],
        received=m["received"],
        first_seen_ms=int(m["first_seen_ms"]),
    )


def _foreign_values(f: ForeignOrder) -> tuple[Any, ...]:
    return (
        f.symbol,
        f.exchange_order_id,
        f.client_order_id,
        f.side.value if f.side else "",
        f.type,
        _text(f.price),
        _text(f.quantity),
        _text(f.executed_qty),
        f.status.value,
        int(f.is_open),
        f.first_seen_ms,
        f.last_seen_ms,
        f.cancel_time_ms,
        f.cancel_error[:500],
    )


def _foreign_from_row(row: tuple[Any, ...]) -> ForeignOrder:
    m = dict(zip(FOREIGN_COLUMNS, row, strict=True))
    return ForeignOrder(
        symbol=m["symbol"],
        client_order_id=m["client_order_id"],
        exchange_order_id=int(m["exchange_order_id"]),
        side=Side(m["side"]) if m["side"] else None,
        type=m["type"],
        price=Decimal(m["price"]),
        quantity=Decimal(m["quantity"]),
        executed_qty=Decimal(m["executed_qty"]),
        status=OrderStatus(m["status"]),
        is_open=bool(m["is_open"]),
        first_seen_ms=int(m["first_seen_ms"]),
        last_seen_ms=int(m["last_seen_ms"]),
        cancel_time_ms=int(m["cancel_time_ms"]),
        cancel_error=m["cancel_error"],
    )


def _cursor(conn: Connection) -> sqlite3.Cursor:
    """The DB-API cursor of ``conn``'s current transaction."""
    return driver_connection(conn).cursor()


class _Tx:
    """JournalTx for one batch: orders written in the batch are seen by later functions in it."""

    def __init__(self, cursor: sqlite3.Cursor, sequence: int, cache: dict[str, Order]):
        self.cursor = cursor
        self.sequence = sequence
        self.cache = cache
        self.overlay: dict[str, Order] = {}
        self.inserted: list[Execution] = []
        self.dirty: dict[str, Order] = {}
        self.new_anomalies: list[Anomaly] = []
        self.foreign: dict[tuple[str, int, str], ForeignOrder] = {}
        self.foreign_dirty: dict[tuple[str, int, str], ForeignOrder] = {}
        self.foreign_new: set[tuple[str, int, str]] = set()

    def get_order(self, client_order_id: str) -> Order | None:
        order = self.overlay.get(client_order_id) or self.cache.get(client_order_id)
        if order is not None:
            return order
        row = self.cursor.execute(_SELECT_ORDER, (client_order_id,)).fetchone()
        return None if row is None else _order_from_row(row)

    def put_order(self, order: Order) -> None:
        self.overlay[order.client_order_id] = order
        self.dirty[order.client_order_id] = order

    def add_execution(self, execution: Execution) -> Execution | None:
        candidate = replace(execution, sequence=self.sequence + 1)
        self.cursor.execute(_INSERT_EXECUTION, _execution_values(candidate))
        if self.cursor.rowcount != 1:
            return None
        self.sequence += 1
        self.inserted.append(candidate)
        return candidate

    def journaled(self, dedup_key: str) -> Execution | None:
        row = self.cursor.execute(_SELECT_EXECUTION_BY_KEY, (dedup_key,)).fetchone()
        return None if row is None else _execution_from_row(row)

    def add_anomaly(self, anomaly: Anomaly) -> bool:
        self.cursor.execute(_INSERT_ANOMALY, _anomaly_values(anomaly))
        if self.cursor.rowcount != 1:
            return False
        self.new_anomalies.append(anomaly)
        return True

    def get_foreign(self, key: tuple[str, int, str]) -> ForeignOrder | None:
        order = self.foreign.get(key)
        if order is not None:
            return order
        row = self.cursor.execute(_SELECT_FOREIGN, key).fetchone()
        return None if row is None else _foreign_from_row(row)

    def put_foreign(self, order: ForeignOrder) -> None:
        if self.get_foreign(order.key) is None:
            self.foreign_new.add(order.key)
        self.foreign[order.key] = order
        self.foreign_dirty[order.key] = order

    def mark(self) -> tuple[Any, ...]:
        """The state to go back to if the next function fails (its SAVEPOINT is rolled back)."""
        return (
            dict(self.overlay),
            self.sequence,
            len(self.inserted),
            len(self.new_anomalies),
            dict(self.foreign),
            set(self.foreign_new),
        )

    def restore(self, mark: tuple[Any, ...]) -> None:
        overlay, sequence, inserted, anomalies, foreign, foreign_new = mark
        self.overlay, self.sequence, self.dirty = overlay, sequence, {}
        del self.inserted[inserted:]
        del self.new_anomalies[anomalies:]
        self.foreign, self.foreign_new, self.foreign_dirty = foreign, foreign_new, {}

    def flush(self) -> None:
        if self.dirty:
            self.cursor.executemany(_UPSERT_ORDER, [_order_values(o) for o in self.dirty.values()])
            self.dirty.clear()
        if self.foreign_dirty:
            self.cursor.executemany(_UPSERT_FOREIGN, [_foreign_values(f) for f in self.foreign_dirty.values()])
            self.foreign_dirty.clear()


@dataclass(slots=True)
class _Item:
    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]
    settled: Callable[[], Any] | None = None


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class SqlJournal:
    """The journal (``service.ports.Journal``) on SQLite through ``shared.db.Database``."""

    def __init__(
        self,
        db: Database,
        *,
        on_commit: Callable[[list[Execution]], None] = lambda _: None,
        on_anomalies: Callable[[list[Anomaly]], None] = lambda _: None,
        on_foreign: Callable[[list[tuple[ForeignOrder, bool]]], None] = lambda _: None,
        max_batch: int = 512,
        max_final_orders: int = 1_000,
        recent_trade_keys: int = 4_096,
    ):
        self.db = db
        self.on_commit = on_commit
        self.on_anomalies = on_anomalies
        self.on_foreign = on_foreign
        self.max_batch = max_batch
        # The cache holds every order that is not final (bounded by the exchange's open-order limits
        # and by the resolver, which settles UNKNOWN ones within their recvWindow) plus the
        # ``max_final_orders`` most recently final ones (in the order they became final).
        self.max_final_orders = max_final_orders
        self.last_sequence = 0
        self.cache: dict[str, Order] = {}
        self._final: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # database transactions
        self.items = 0  # functions run in them
        self.settled = 0  # functions answered by their ``settled`` check, without the database
        self.recent_trade_keys = recent_trade_keys
        self._recent: collections.OrderedDict[str, TradeIdentity] = collections.OrderedDict()

    # --- life cycle -----------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the tables if they do not exist (idempotent)."""
        metadata.create_all(self.db.engine)

    async def open(self) -> list[Order]:
        """Load the last sequence and every order that is not final; start the writer."""

        def load(conn: Connection) -> tuple[int, list[Order]]:
            cursor = _cursor(conn)
            last = cursor.execute(_LAST_SEQUENCE).fetchone()[0]
            rows = cursor.execute(_SELECT_OPEN_ORDERS).fetchall()
            return int(last or 0), [_order_from_row(r) for r in rows]

        self.last_sequence, pending = await self.db.read(load)
        for order in pending:
            self.cache[order.client_order_id] = order
        self._task = asyncio.create_task(self._run(), name="journal-writer")
        return pending

    async def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # --- writes ---------------------------------------------------------------------------------------

    def submit(self, fn: Callable[[Any], T], *, settled: Callable[[], T | None] | None = None) -> asyncio.Future[T]:
        if self._task is None:
            raise RuntimeError("journal is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(fn, future, settled))
        return future

    async def transact(self, fn: Callable[[Any], T], *, settled: Callable[[], T | None] | None = None) -> T:
        return await self.submit(fn, settled=settled)

    async def _run(self) -> None:
        while True:
            item: _Item | None = await self._queue.get()
            batch: list[_Item] = []
            while item is not None:
                if not self._settle(item):
                    batch.append(item)
                if len(batch) >= self.max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._write(batch)
            if item is None:
                return

    def _settle(self, item: _Item) -> bool:
        """Answer ``item`` from the committed state when its ``settled`` check says nothing is left to write."""
        if item.settled is None:
            return False
        try:
            result = item.settled()
        except Exception:
            log.exception("journal settled check failed")
            return False
        if result is None:
            return False
        if not item.future.done():  # a caller that went away (cancelled) needs no answer
            item.future.set_result(result)
        self.settled += 1
        return True

    async def _write(self, batch: list[_Item]) -> None:
        sequence = self.last_sequence
        cache = self.cache

        def apply(conn: Connection) -> tuple[list[Any], _Tx]:
            cursor = _cursor(conn)
            tx = _Tx(cursor, sequence, cache)
            results: list[Any] = []
            for item in batch:
                mark = tx.mark()
                cursor.execute("SAVEPOINT item")
                try:
                    results.append(item.fn(tx))
                    tx.flush()
                except Exception as exc:
                    cursor.execute("ROLLBACK TO SAVEPOINT item")
                    tx.restore(mark)
                    results.append(_Failed(exc))
                cursor.execute("RELEASE SAVEPOINT item")
            return results, tx

        try:
            results, tx = await self.db.write(apply)
        except Exception as exc:
            log.exception("journal batch failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(batch)
        self._cache(tx.overlay)
        self.last_sequence = tx.sequence
        for execution in tx.inserted:
            if execution.exec_type is ExecType.TRADE:
                self._remember(execution.dedup_key, execution.trade_identity)
        if tx.inserted:
            try:
                self.on_commit(tx.inserted)
            except Exception:
                log.exception("publishing executions failed")
        if tx.new_anomalies:
            try:
                self.on_anomalies(tx.new_anomalies)
            except Exception:
                log.exception("reporting anomalies failed")
        if tx.foreign:
            try:
                self.on_foreign([(f, key in tx.foreign_new) for key, f in tx.foreign.items()])
            except Exception:
                log.exception("reporting foreign orders failed")
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, _Failed):
                log.error("journal write failed", exc_info=result.exc)
                item.future.set_exception(result.exc)
            else:
                item.future.set_result(result)

    def _remember(self, key: str, identity: TradeIdentity) -> None:
        self._recent[key] = identity
        while len(self._recent) > self.recent_trade_keys:
            self._recent.popitem(last=False)

    def journaled_trade(self, dedup_key: str) -> TradeIdentity | None:
        """The identity of a trade journaled under this key recently (the last ``recent_trade_keys``)."""
        return self._recent.get(dedup_key)

    def _cache(self, committed: dict[str, Order]) -> None:
        """Adopt the orders a batch committed; forget the oldest final ones beyond ``max_final_orders``."""
        cache, final = self.cache, self._final
        for cid, order in committed.items():
            cache[cid] = order
            if order.status in FINAL_STATUSES and cid not in final:
                final[cid] = None
        while len(final) > self.max_final_orders:
            cid, _ = final.popitem(last=False)
            cache.pop(cid, None)

    # --- reads ----------------------------------------------------------------------------------------

    def cached_order(self, client_order_id: str) -> Order | None:
        return self.cache.get(client_order_id)

    async def get_order(self, client_order_id: str) -> Order | None:
        order = self.cache.get(client_order_id)
        if order is not None:
            return order

        def load(conn: Connection) -> Order | None:
            row = _cursor(conn).execute(_SELECT_ORDER, (client_order_id,)).fetchone()
            return None if row is None else _order_from_row(row)

        return await self.db.read(load)

    async def orders_not_final(self) -> list[Order]:
        def load(conn: Connection) -> list[Order]:
            return [_order_from_row(r) for r in _cursor(conn).execute(_SELECT_OPEN_ORDERS).fetchall()]

        loaded = await self.db.read(load)
        # The cache is at least as new as the database (it is updated right after each commit).
        return [
            self.cache.get(o.client_order_id, o) for o in loaded if not self.cache.get(o.client_order_id, o).is_final
        ]

    async def executions_after(self, sequence: int, limit: int) -> list[Execution]:
        def load(conn: Connection) -> list[Execution]:
            rows = _cursor(conn).execute(_SELECT_EXECUTIONS, (sequence, limit)).fetchall()
            return [_execution_from_row(r) for r in rows]

        return await self.db.read(load)

    async def foreign_orders(self, *, open_only: bool = False) -> list[ForeignOrder]:
        statement = _SELECT_FOREIGN_OPEN if open_only else _SELECT_FOREIGN_ALL

        def load(conn: Connection) -> list[ForeignOrder]:
            return [_foreign_from_row(r) for r in _cursor(conn).execute(statement).fetchall()]

        return await self.db.read(load)

    async def anomalies(self) -> list[Anomaly]:
        def load(conn: Connection) -> list[Anomaly]:
            return [_anomaly_from_row(r) for r in _cursor(conn).execute(_SELECT_ANOMALIES).fetchall()]

        return await self.db.read(load)
