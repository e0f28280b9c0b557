"""The gateway's journal (SQLite or PostgreSQL): orders before they are sent, and every execution once.

Four tables:
- ``gateway_orders``: one row per client_order_id, written before the order is sent and updated
  with everything learned since.
- ``gateway_executions``: the execution journal. ``sequence`` is 1, 2, 3... with no gap: it is
  assigned inside the same write transaction as the insert (one writer: the gateway's one writer
  connection; a second gateway on the same database would clash on the key, never skip), and a
  duplicate (same ``dedup_key``) is skipped without using up a number. ``dedup_key`` is
  ``T|symbol|trade_id`` for trades and ``X|client_order_id|type`` for the other types.
- ``gateway_anomalies``: what the exchange reported against the journal (a trade key that came
  again with other content, an open order the exchange no longer knows), one row per ``dedup_key``.
- ``gateway_foreign_orders``: orders on the account that the gateway did not place, keyed by
  (symbol, exchange order id, client order id); never executions, so never on the stream.

After each commit the new executions go to ``on_commit`` (the stream), newly recorded anomalies to
``on_anomalies`` and the foreign orders written (with whether each is new) to ``on_foreign``.

Writes are batched by ``shared.db.GroupCommit``: ``transact`` queues a function; one task runs
everything queued in one transaction on the database writer thread, each function inside a
SAVEPOINT so that one failing function does not undo the others, commits once (one fsync for the
batch), then publishes the new executions in sequence order and answers the callers. A queued function may come with a
``settled`` check, run on the event loop when the writer takes it, i.e. after every earlier batch
has committed: if the committed state already holds what the function would write (a user data
stream report of what the order's answer just journaled), the caller gets that answer and the
database is not touched. The check is only a shortcut; the dedup keys in the database decide.

The order cache holds every order that is not final and the ``max_final_orders`` that most
recently became final; everything else is read from the database when needed. Decimals are stored
as exact text with their own digits (``ExactDecimal(None)``: the exchange's values can have more
places than the ledger's 8); they are never summed or sorted in SQL. The schema is made by the
Alembic history in ``migrations/`` (``HISTORY``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
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
    bindparam,
    func,
    select,
    tuple_,
)

from services.exchange_gateway.domain.model import (
    FINAL_STATUSES,
    Anomaly,
    AnomalyKind,
    ExecType,
    Execution,
    ForeignOrder,
    ForeignPosition,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    TradeIdentity,
)
from shared.db import (
    Cursor,
    Database,
    ExactDecimal,
    GroupCommit,
    Statement,
    TransactionObserver,
    optional_decimal,
    upsert,
)
from shared.migrations import History, upgrade

T = TypeVar("T")
log = logging.getLogger("exchange_gateway.journal")


def exchange_decimal() -> ExactDecimal:
    """The exchange's figures as exact text with their own digits (they can have more places than 8)."""
    return ExactDecimal(None, length=64)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


_dec = optional_decimal

metadata = MetaData()

orders = Table(
    "gateway_orders",
    metadata,
    Column("client_order_id", String(36), primary_key=True),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("type", String(20), nullable=False),
    Column("time_in_force", String(8)),
    Column("quantity", exchange_decimal(), nullable=False),
    Column("price", exchange_decimal()),
    Column("stop_price", exchange_decimal()),
    Column("status", String(24), nullable=False),
    Column("exchange_order_id", BigInteger, nullable=False, default=0),
    Column("executed_qty", exchange_decimal(), nullable=False),
    Column("cum_quote_qty", exchange_decimal(), nullable=False),
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
    Column("last_qty", exchange_decimal(), nullable=False),
    Column("last_price", exchange_decimal(), nullable=False),
    Column("last_quote_qty", exchange_decimal(), nullable=False),
    Column("cum_qty", exchange_decimal(), nullable=False),
    Column("cum_quote_qty", exchange_decimal(), nullable=False),
    Column("commission", exchange_decimal(), nullable=False),
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
    Column("price", exchange_decimal(), nullable=False),
    Column("quantity", exchange_decimal(), nullable=False),
    Column("executed_qty", exchange_decimal(), nullable=False),
    Column("status", String(24), nullable=False),
    Column("is_open", Boolean, nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("cancel_time_ms", BigInteger, nullable=False),
    Column("cancel_error", String(500), nullable=False),
    Index("ix_gateway_foreign_orders_open", "is_open"),
)

HISTORY = History(
    "exchange_gateway",
    Path(__file__).parent / "migrations",
    releases=(
        ("0002", frozenset({"gateway_orders", "gateway_executions", "gateway_anomalies", "gateway_foreign_orders"})),
        ("0001", frozenset({"gateway_orders", "gateway_executions"})),
    ),
)
"""The journal's migration history; ``releases`` are the schemas of databases made before it had one."""

ORDER_COLUMNS = tuple(c.name for c in orders.columns)
EXECUTION_COLUMNS = tuple(c.name for c in executions.columns)
ANOMALY_COLUMNS = tuple(c.name for c in anomalies.columns if c.name != "id")
FOREIGN_COLUMNS = tuple(c.name for c in foreign_orders.columns)

# Statements are SQLAlchemy Core, compiled once for the engine's dialect (``shared.db.Statement``) and
# run on the DB-API cursor of the transaction: SQLAlchemy's per-call execution cost ~0.35 ms per
# statement here, several times the database's own work. Parameters are DB-API values (decimals as
# exact text).
_ORDER_KEYS = ("client_order_id", "create_time_ms")
_FOREIGN_KEYS = ("symbol", "exchange_order_id", "client_order_id")
_SELECT_ORDER = Statement(select(orders).where(orders.c.client_order_id == bindparam("client_order_id")))
_SELECT_OPEN_ORDERS = Statement(select(orders).where(orders.c.final.is_(False)))
_UPSERT_ORDER = Statement(
    upsert(orders, ["client_order_id"], [c for c in ORDER_COLUMNS if c not in _ORDER_KEYS]), ORDER_COLUMNS
)
_INSERT_EXECUTION = Statement(upsert(executions, ["dedup_key"]), EXECUTION_COLUMNS)
_SELECT_EXECUTIONS = Statement(
    select(executions)
    .where(executions.c.sequence > bindparam("after"))
    .order_by(executions.c.sequence)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))  # SQLite's LIMIT comes with an OFFSET: bound here, always 0
)
_LAST_SEQUENCE = Statement(select(func.max(executions.c.sequence)))
_SELECT_EXECUTION_BY_KEY = Statement(select(executions).where(executions.c.dedup_key == bindparam("dedup_key")))
_INSERT_ANOMALY = Statement(upsert(anomalies, ["dedup_key"]), ANOMALY_COLUMNS)
_PAGE_OF_ANOMALIES = Statement(
    select(anomalies.c.id, *(anomalies.c[c] for c in ANOMALY_COLUMNS))
    .where(anomalies.c.id > bindparam("after"))
    .order_by(anomalies.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))  # bound, always 0 (as for executions)
)
_SELECT_FOREIGN = Statement(select(foreign_orders).where(*(foreign_orders.c[k] == bindparam(k) for k in _FOREIGN_KEYS)))
_FOREIGN_ORDER = (
    foreign_orders.c.first_seen_ms,
    foreign_orders.c.symbol,
    foreign_orders.c.exchange_order_id,
    foreign_orders.c.client_order_id,
)
_SELECT_FOREIGN_ALL = Statement(select(foreign_orders).order_by(*_FOREIGN_ORDER))
_SELECT_FOREIGN_OPEN = Statement(
    select(foreign_orders).where(foreign_orders.c.is_open.is_(True)).order_by(*_FOREIGN_ORDER)
)
_FOREIGN_AFTER = tuple_(*_FOREIGN_ORDER) > tuple_(
    bindparam("first_seen_ms"), bindparam("symbol"), bindparam("exchange_order_id"), bindparam("client_order_id")
)


def _page_of_foreign(*conditions: Any) -> Statement:
    query = select(foreign_orders).where(*conditions).order_by(*_FOREIGN_ORDER)
    return Statement(query.limit(bindparam("limit")).offset(bindparam("offset")))


# ListForeignOrders, a page at a time: the first page, the next ones, each of all or only open orders.
_FOREIGN_FIRST_PAGE = _page_of_foreign()
_FOREIGN_NEXT_PAGE = _page_of_foreign(_FOREIGN_AFTER)
_OPEN_FOREIGN_FIRST_PAGE = _page_of_foreign(foreign_orders.c.is_open.is_(True))
_OPEN_FOREIGN_NEXT_PAGE = _page_of_foreign(_FOREIGN_AFTER, foreign_orders.c.is_open.is_(True))
_PAGES_OF_FOREIGN = {
    (True, False): _FOREIGN_FIRST_PAGE,
    (False, False): _FOREIGN_NEXT_PAGE,
    (True, True): _OPEN_FOREIGN_FIRST_PAGE,
    (False, True): _OPEN_FOREIGN_NEXT_PAGE,
}
_UPSERT_FOREIGN = Statement(
    upsert(foreign_orders, _FOREIGN_KEYS, [c for c in FOREIGN_COLUMNS if c not in (*_FOREIGN_KEYS, "first_seen_ms")]),
    FOREIGN_COLUMNS,
)


def _named(columns: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(columns, values, strict=True))


def _order_values(order: Order) -> dict[str, Any]:
    return _named(
        ORDER_COLUMNS,
        (
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
            bool(order.cancel_requested),
            bool(order.reported_new),
            bool(order.status in FINAL_STATUSES),
        ),
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


def _execution_values(e: Execution) -> dict[str, Any]:
    return _named(
        EXECUTION_COLUMNS,
        (
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
            bool(e.is_maker),
            e.reject_reason[:500],
            e.transaction_time_ms,
            e.journal_time_ms,
        ),
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


def _anomaly_values(a: Anomaly) -> dict[str, Any]:
    return _named(
        ANOMALY_COLUMNS,
        (
            a.dedup_key,
            a.kind.value,
            a.symbol,
            a.trade_id,
            a.client_order_id,
            a.journaled[:500],
            a.received[:500],
            a.first_seen_ms,
        ),
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


def _foreign_values(f: ForeignOrder) -> dict[str, Any]:
    return _named(
        FOREIGN_COLUMNS,
        (
            f.symbol,
            f.exchange_order_id,
            f.client_order_id,
            f.side.value if f.side else "",
            f.type,
            _text(f.price),
            _text(f.quantity),
            _text(f.executed_qty),
            f.status.value,
            bool(f.is_open),
            f.first_seen_ms,
            f.last_seen_ms,
            f.cancel_time_ms,
            f.cancel_error[:500],
        ),
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


class _Tx:
    """JournalTx for one batch: orders written in the batch are seen by later functions in it."""

    def __init__(self, cursor: Cursor, sequence: int, cache: dict[str, Order]):
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
        row = self.cursor.one(_SELECT_ORDER, {"client_order_id": client_order_id})
        return None if row is None else _order_from_row(row)

    def put_order(self, order: Order) -> None:
        self.overlay[order.client_order_id] = order
        self.dirty[order.client_order_id] = order

    def add_execution(self, execution: Execution) -> Execution | None:
        candidate = replace(execution, sequence=self.sequence + 1)
        if self.cursor.execute(_INSERT_EXECUTION, _execution_values(candidate)).rowcount != 1:
            return None
        self.sequence += 1
        self.inserted.append(candidate)
        return candidate

    def journaled(self, dedup_key: str) -> Execution | None:
        row = self.cursor.one(_SELECT_EXECUTION_BY_KEY, {"dedup_key": dedup_key})
        return None if row is None else _execution_from_row(row)

    def add_anomaly(self, anomaly: Anomaly) -> bool:
        if self.cursor.execute(_INSERT_ANOMALY, _anomaly_values(anomaly)).rowcount != 1:
            return False
        self.new_anomalies.append(anomaly)
        return True

    def get_foreign(self, key: tuple[str, int, str]) -> ForeignOrder | None:
        order = self.foreign.get(key)
        if order is not None:
            return order
        row = self.cursor.one(_SELECT_FOREIGN, dict(zip(_FOREIGN_KEYS, key, strict=True)))
        return None if row is None else _foreign_from_row(row)

    def put_foreign(self, order: ForeignOrder) -> None:
        if self.get_foreign(order.key) is None:
            self.foreign_new.add(order.key)
        self.foreign[order.key] = order
        self.foreign_dirty[order.key] = order

    def run(self, fn: Callable[[_Tx], T]) -> T:
        """Run one queued function and write what it changed; if it raises, forget what it did in memory
        (``GroupCommit`` rolls back its savepoint)."""
        mark = (
            dict(self.overlay),
            self.sequence,
            len(self.inserted),
            len(self.new_anomalies),
            dict(self.foreign),
            set(self.foreign_new),
        )
        try:
            result = fn(self)
            self.flush()
        except Exception as exc:
            overlay, sequence, inserted, anomalies, foreign, foreign_new = mark
            self.overlay, self.sequence, self.dirty = overlay, sequence, {}
            del self.inserted[inserted:]
            del self.new_anomalies[anomalies:]
            self.foreign, self.foreign_new, self.foreign_dirty = foreign, foreign_new, {}
            log.error("journal write failed", exc_info=exc)
            raise
        return result

    def flush(self) -> None:
        if self.dirty:
            self.cursor.many(_UPSERT_ORDER, [_order_values(o) for o in self.dirty.values()])
            self.dirty.clear()
        if self.foreign_dirty:
            self.cursor.many(_UPSERT_FOREIGN, [_foreign_values(f) for f in self.foreign_dirty.values()])
            self.foreign_dirty.clear()


class SqlJournal:
    """The journal (``service.ports.Journal``) on ``shared.db``: writes through ``GroupCommit``, reads
    through ``Database``."""

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
        self._group: GroupCommit[_Tx] | None = None
        self.observer: TransactionObserver | None = None
        """Metrics and spans of the journal's writes (set by the bootstrap before ``open``)."""
        self.recent_trade_keys = recent_trade_keys
        self._recent: collections.OrderedDict[str, TradeIdentity] = collections.OrderedDict()

    @property
    def batches(self) -> int:
        """Database transactions committed."""
        return self._group.batches if self._group else 0

    @property
    def settled(self) -> int:
        """Functions answered by their ``settled`` check, without the database."""
        return self._group.settled if self._group else 0

    # --- life cycle -----------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the database to the newest schema revision (``shared.migrations.upgrade``)."""
        upgrade(self.db.engine, HISTORY)

    async def open(self) -> list[Order]:
        """Load the last sequence and every order that is not final; start the writer."""

        def load(conn: Connection) -> tuple[int, list[Order]]:
            cursor = Cursor(conn)
            last = cursor.one(_LAST_SEQUENCE)[0]
            return int(last or 0), [_order_from_row(r) for r in cursor.all(_SELECT_OPEN_ORDERS)]

        self.last_sequence, pending = await self.db.read(load)
        for order in pending:
            self.cache[order.client_order_id] = order
        self._group = GroupCommit(
            self.db.engine,
            lambda conn: _Tx(Cursor(conn), self.last_sequence, self.cache),
            name="journal",
            max_batch=self.max_batch,
            on_commit=self._committed,
            logger=log,
        )
        self._group.observer = self.observer
        return pending

    async def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        if self._group is None:
            return
        group, self._group = self._group, None
        await group.drain()
        await asyncio.to_thread(group.close)

    # --- writes ---------------------------------------------------------------------------------------

    def hurry(self) -> None:
        if self._group is not None:
            self._group.hurry()

    def submit(
        self, fn: Callable[[Any], T], *, settled: Callable[[], T | None] | None = None, defer: float | None = None
    ) -> asyncio.Future[T]:
        if self._group is None:
            raise RuntimeError("journal is not open")
        return self._group.submit(lambda tx: tx.run(fn), settled=settled, defer=defer)

    async def transact(
        self, fn: Callable[[Any], T], *, settled: Callable[[], T | None] | None = None, defer: float | None = None
    ) -> T:
        return await self.submit(fn, settled=settled, defer=defer)

    def _committed(self, tx: _Tx) -> None:
        """After a COMMIT: adopt the batch's orders, then publish its executions, anomalies and foreign orders."""
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
            row = Cursor(conn).one(_SELECT_ORDER, {"client_order_id": client_order_id})
            return None if row is None else _order_from_row(row)

        return await self.db.read(load)

    async def orders_not_final(self) -> list[Order]:
        def load(conn: Connection) -> list[Order]:
            return [_order_from_row(r) for r in Cursor(conn).all(_SELECT_OPEN_ORDERS)]

        loaded = await self.db.read(load)
        # The cache is at least as new as the database (it is updated right after each commit).
        return [
            self.cache.get(o.client_order_id, o) for o in loaded if not self.cache.get(o.client_order_id, o).is_final
        ]

    async def executions_after(self, sequence: int, limit: int) -> list[Execution]:
        def load(conn: Connection) -> list[Execution]:
            rows = Cursor(conn).all(_SELECT_EXECUTIONS, {"after": sequence, "limit": limit, "offset": 0})
            return [_execution_from_row(r) for r in rows]

        return await self.db.read(load)

    async def foreign_orders(self, *, open_only: bool = False) -> list[ForeignOrder]:
        statement = _SELECT_FOREIGN_OPEN if open_only else _SELECT_FOREIGN_ALL

        def load(conn: Connection) -> list[ForeignOrder]:
            return [_foreign_from_row(r) for r in Cursor(conn).all(statement)]

        return await self.db.read(load)

    async def page_of_foreign_orders(
        self, after: ForeignPosition | None, limit: int, *, open_only: bool = False
    ) -> list[ForeignOrder]:
        """Up to ``limit`` foreign orders after ``after`` (None: from the first), in their listing order."""
        statement = _PAGES_OF_FOREIGN[(after is None, open_only)]
        params: dict[str, Any] = {"limit": limit, "offset": 0}
        if after is not None:
            params.update(zip(("first_seen_ms", "symbol", "exchange_order_id", "client_order_id"), after, strict=True))

        def load(conn: Connection) -> list[ForeignOrder]:
            return [_foreign_from_row(r) for r in Cursor(conn).all(statement, params)]

        return await self.db.read(load)

    async def page_of_anomalies(self, after_id: int, limit: int) -> list[tuple[int, Anomaly]]:
        """Up to ``limit`` anomalies whose row id is above ``after_id``, with their ids, oldest first."""

        def load(conn: Connection) -> list[tuple[int, Anomaly]]:
            rows = Cursor(conn).all(_PAGE_OF_ANOMALIES, {"after": after_id, "limit": limit, "offset": 0})
            return [(int(r[0]), _anomaly_from_row(tuple(r[1:]))) for r in rows]

        return await self.db.read(load)
