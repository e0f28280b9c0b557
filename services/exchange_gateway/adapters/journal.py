"""The gateway's SQLite journal: orders before they are sent, and every execution once.

Two tables:
- ``gateway_orders``: one row per client_order_id, written before the order is sent and updated
  with everything learned since.
- ``gateway_executions``: the execution journal. ``sequence`` is 1, 2, 3... with no gap: it is
  assigned inside the same BEGIN IMMEDIATE transaction as the insert (one writer at a time), and a
  duplicate (same ``dedup_key``) is skipped without using up a number. ``dedup_key`` is
  ``T|symbol|trade_id`` for trades and ``X|client_order_id|type`` for the other types.

Writes are batched: ``transact`` queues a function; one task runs everything queued in one
transaction on the database writer thread, each function inside a SAVEPOINT so that one failing
function does not undo the others, commits once (one fsync for the batch), then publishes the new
executions in sequence order and answers the callers. Decimals are stored as exact text (the
exchange's values can have more places than the ledger's 8, so ``shared.db.ExactDecimal`` would
not do); they are never summed or sorted in SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    func,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import TypeDecorator

from services.exchange_gateway.domain.model import (
    FINAL_STATUSES,
    ExecType,
    Execution,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from shared.db import Database

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
    Column("type", String(16), nullable=False),
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

_ORDER_COLUMNS = [c.name for c in orders.columns]


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "time_in_force": order.time_in_force.value if order.time_in_force else None,
        "quantity": order.quantity,
        "price": order.price,
        "stop_price": order.stop_price,
        "status": order.status.value,
        "exchange_order_id": order.exchange_order_id,
        "executed_qty": order.executed_qty,
        "cum_quote_qty": order.cum_quote_qty,
        "reject_reason": order.reject_reason[:500],
        "create_time_ms": order.create_time_ms,
        "update_time_ms": order.update_time_ms,
        "request_time_ms": order.request_time_ms,
        "recv_window_ms": order.recv_window_ms,
        "cancel_requested": order.cancel_requested,
        "reported_new": order.reported_new,
        "final": order.status in FINAL_STATUSES,
    }


def _order_from_row(row: Any) -> Order:
    m = row._mapping
    return Order(
        client_order_id=m["client_order_id"],
        symbol=m["symbol"],
        side=Side(m["side"]),
        type=OrderType(m["type"]),
        time_in_force=TimeInForce(m["time_in_force"]) if m["time_in_force"] else None,
        quantity=m["quantity"],
        price=m["price"],
        stop_price=m["stop_price"],
        status=OrderStatus(m["status"]),
        exchange_order_id=int(m["exchange_order_id"]),
        executed_qty=m["executed_qty"],
        cum_quote_qty=m["cum_quote_qty"],
        reject_reason=m["reject_reason"],
        create_time_ms=int(m["create_time_ms"]),
        update_time_ms=int(m["update_time_ms"]),
        request_time_ms=int(m["request_time_ms"]),
        recv_window_ms=int(m["recv_window_ms"]),
        cancel_requested=bool(m["cancel_requested"]),
        reported_new=bool(m["reported_new"]),
    )


def _execution_row(e: Execution) -> dict[str, Any]:
    return {
        "sequence": e.sequence,
        "dedup_key": e.dedup_key,
        "client_order_id": e.client_order_id,
        "exchange_order_id": e.exchange_order_id,
        "symbol": e.symbol,
        "side": e.side.value,
        "exec_type": e.exec_type.value,
        "order_status": e.order_status.value,
        "trade_id": e.trade_id,
        "last_qty": e.last_qty,
        "last_price": e.last_price,
        "last_quote_qty": e.last_quote_qty,
        "cum_qty": e.cum_qty,
        "cum_quote_qty": e.cum_quote_qty,
        "commission": e.commission,
        "commission_asset": e.commission_asset,
        "is_maker": e.is_maker,
        "reject_reason": e.reject_reason[:500],
        "transaction_time_ms": e.transaction_time_ms,
        "journal_time_ms": e.journal_time_ms,
    }


def _execution_from_row(row: Any) -> Execution:
    m = row._mapping
    return Execution(
        sequence=int(m["sequence"]),
        client_order_id=m["client_order_id"],
        exchange_order_id=int(m["exchange_order_id"]),
        symbol=m["symbol"],
        side=Side(m["side"]),
        exec_type=ExecType(m["exec_type"]),
        order_status=OrderStatus(m["order_status"]),
        trade_id=int(m["trade_id"]),
        last_qty=m["last_qty"],
        last_price=m["last_price"],
        last_quote_qty=m["last_quote_qty"],
        cum_qty=m["cum_qty"],
        cum_quote_qty=m["cum_quote_qty"],
        commission=m["commission"],
        commission_asset=m["commission_asset"],
        is_maker=bool(m["is_maker"]),
        reject_reason=m["reject_reason"],
        transaction_time_ms=int(m["transaction_time_ms"]),
        journal_time_ms=int(m["journal_time_ms"]),
    )


_UPSERT_ORDER = sqlite_insert(orders)
_UPSERT_ORDER = _UPSERT_ORDER.on_conflict_do_update(
    index_elements=[orders.c.client_order_id],
    set_={
        name: _UPSERT_ORDER.excluded[name]
        for name in _ORDER_COLUMNS
        if name not in ("client_order_id", "create_time_ms")
    },
)
_INSERT_EXECUTION = sqlite_insert(executions).on_conflict_do_nothing(index_elements=[executions.c.dedup_key])


class _Tx:
    """JournalTx for one batch: orders written in the batch are seen by later functions in it."""

    def __init__(self, conn: Connection, sequence: int, cache: dict[str, Order]):
        self.conn = conn
        self.sequence = sequence
        self.cache = cache
        self.overlay: dict[str, Order] = {}
        self.inserted: list[Execution] = []
        self.dirty: dict[str, Order] = {}

    def get_order(self, client_order_id: str) -> Order | None:
        order = self.overlay.get(client_order_id) or self.cache.get(client_order_id)
        if order is not None:
            return order
        row = self.conn.execute(select(orders).where(orders.c.client_order_id == client_order_id)).first()
        return None if row is None else _order_from_row(row)

    def put_order(self, order: Order) -> None:
        self.overlay[order.client_order_id] = order
        self.dirty[order.client_order_id] = order

    def add_execution(self, execution: Execution) -> Execution | None:
        candidate = replace(execution, sequence=self.sequence + 1)
        result = self.conn.execute(_INSERT_EXECUTION, _execution_row(candidate))
        if result.rowcount != 1:
            return None
        self.sequence += 1
        self.inserted.append(candidate)
        return candidate

    def flush(self) -> None:
        if self.dirty:
            self.conn.execute(_UPSERT_ORDER, [_order_row(o) for o in self.dirty.values()])
            self.dirty.clear()


@dataclass
class _Item:
    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]


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
        max_batch: int = 512,
        max_cached_orders: int = 200_000,
    ):
        self.db = db
        self.on_commit = on_commit
        self.max_batch = max_batch
        self.max_cached_orders = max_cached_orders
        self.last_sequence = 0
        self.cache: dict[str, Order] = {}
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    # --- life cycle -----------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the tables if they do not exist (idempotent)."""
        metadata.create_all(self.db.engine)

    async def open(self) -> list[Order]:
        """Load the last sequence and every order that is not final; start the writer."""

        def load(conn: Connection) -> tuple[int, list[Order]]:
            last = conn.execute(select(func.max(executions.c.sequence))).scalar()
            rows = conn.execute(select(orders).where(orders.c.final.is_(False))).all()
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

    def submit(self, fn: Callable[[Any], T]) -> asyncio.Future[T]:
        if self._task is None:
            raise RuntimeError("journal is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(fn, future))
        return future

    async def transact(self, fn: Callable[[Any], T]) -> T:
        return await self.submit(fn)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._write(batch)
            if stop:
                return

    async def _write(self, batch: list[_Item]) -> None:
        sequence = self.last_sequence
        cache = self.cache

        def apply(conn: Connection) -> tuple[list[Any], _Tx]:
            tx = _Tx(conn, sequence, cache)
            results: list[Any] = []
            for item in batch:
                overlay = dict(tx.overlay)
                seq, inserted = tx.sequence, len(tx.inserted)
                try:
                    with conn.begin_nested():
                        results.append(item.fn(tx))
                        tx.flush()
                except Exception as exc:
                    tx.overlay, tx.sequence, tx.dirty = overlay, seq, {}
                    del tx.inserted[inserted:]
                    results.append(_Failed(exc))
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
        self.cache.update(tx.overlay)
        self.last_sequence = tx.sequence
        if len(self.cache) > self.max_cached_orders:
            self._evict()
        if tx.inserted:
            try:
                self.on_commit(tx.inserted)
            except Exception:
                log.exception("publishing executions failed")
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, _Failed):
                log.error("journal write failed", exc_info=result.exc)
                item.future.set_exception(result.exc)
            else:
                item.future.set_result(result)

    def _evict(self) -> None:
        for cid in [cid for cid, o in self.cache.items() if o.is_final][: len(self.cache) // 2]:
            del self.cache[cid]

    # --- reads ----------------------------------------------------------------------------------------

    def cached_order(self, client_order_id: str) -> Order | None:
        return self.cache.get(client_order_id)

    async def get_order(self, client_order_id: str) -> Order | None:
        order = self.cache.get(client_order_id)
        if order is not None:
            return order

        def load(conn: Connection) -> Order | None:
            row = conn.execute(select(orders).where(orders.c.client_order_id == client_order_id)).first()
            return None if row is None else _order_from_row(row)

        return await self.db.read(load)

    async def orders_not_final(self) -> list[Order]:
        def load(conn: Connection) -> list[Order]:
            return [_order_from_row(r) for r in conn.execute(select(orders).where(orders.c.final.is_(False))).all()]

        loaded = await self.db.read(load)
        # The cache is at least as new as the database (it is updated right after each commit).
        return [
            self.cache.get(o.client_order_id, o) for o in loaded if not self.cache.get(o.client_order_id, o).is_final
        ]

    async def executions_after(self, sequence: int, limit: int) -> list[Execution]:
        def load(conn: Connection) -> list[Execution]:
            rows = conn.execute(
                select(executions).where(executions.c.sequence > sequence).order_by(executions.c.sequence).limit(limit)
            ).all()
            return [_execution_from_row(r) for r in rows]

        return await self.db.read(load)
