"""SQLite tables of the order service and the store over them (SQLAlchemy Core, sync, on a writer thread).

Tables:
- ``orders``: one row per order; UNIQUE(user_id, client_order_id) makes PlaceOrder idempotent.
- ``fills``: one row per exchange trade; the primary key ``fill_id`` ("<symbol>:<trade id>") is what
  makes a trade apply exactly once.
- ``outbox``: side effects owed to the user service (SettleTrade, ReleaseFunds), written in the
  same transaction as the change that causes them and deleted once performed.
- ``cursor``: the sequence of the last gateway execution applied, moved in the same transaction.

Money is canonical decimal text (``ExactDecimal``); times are integer Unix milliseconds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from services.order_service.domain.model import (
    Effect,
    Fill,
    Order,
    OrderType,
    ReleaseFunds,
    SettleTrade,
    Side,
    TimeInForce,
    UserLimits,
)
from services.order_service.domain.states import State
from services.order_service.service.ports import OutboxEntry, ParkedEffect
from shared.db import Database, ExactDecimal, GroupCommit, create_sqlite_engine, driver_connection
from shared.errors import Unavailable
from shared.money import fmt, to_storage
from shared.timeutil import now_ms

log = logging.getLogger("order_service.db")

T = TypeVar("T")

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("user_id", String(40), nullable=False),
    Column("client_order_id", String(64), nullable=False),
    Column("symbol", String(30), nullable=False),
    Column("base_asset", String(20), nullable=False),
    Column("quote_asset", String(20), nullable=False),
    Column("side", String(4), nullable=False),
    Column("type", String(20), nullable=False),
    Column("time_in_force", String(3), nullable=False),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("price", ExactDecimal(), nullable=True),
    Column("stop_price", ExactDecimal(), nullable=True),
    Column("expire_time_ms", BigInteger, nullable=True),
    Column("reserve_asset", String(20), nullable=False),
    Column("reserve_amount", ExactDecimal(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("filled_quantity", ExactDecimal(), nullable=False),
    Column("filled_quote_quantity", ExactDecimal(), nullable=False),
    Column("commission", ExactDecimal(), nullable=False),
    Column("commission_asset", String(20), nullable=False),
    Column("reject_reason", Text, nullable=False),
    Column("exchange_order_id", String(24), nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("expire_requested", Boolean, nullable=False),
    Column("create_time_ms", BigInteger, nullable=False),
    Column("update_time_ms", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Index("orders_user_client_id", "user_id", "client_order_id", unique=True),
    Index("orders_user_newest", "user_id", "order_id"),
    # Recovery, reconciliation and expiry look up the (few) orders in given states.
    Index("orders_state", "state"),
)

fills = Table(
    "fills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fill_id", String(64), nullable=False, unique=True),
    Column("order_id", String(40), nullable=False),
    Column("symbol", String(30), nullable=False),
    Column("side", String(4), nullable=False),
    Column("price", ExactDecimal(), nullable=False),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("quote_quantity", ExactDecimal(), nullable=False),
    Column("commission", ExactDecimal(), nullable=False),
    Column("commission_asset", String(20), nullable=False),
    Column("is_maker", Boolean, nullable=False),
    Column("trade_time_ms", BigInteger, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Index("fills_order", "order_id", "id"),
    sqlite_autoincrement=True,
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(40), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    sqlite_autoincrement=True,
)

# Outbox entries that failed for a definite reason too often: kept in the outbox, not performed
# (nor the later entries of the same order) until an operator retries them. A table of its own, so
# that a database made before it existed gains it at start.
parked_effects = Table(
    "parked_effects",
    metadata,
    Column("entry_id", Integer, primary_key=True),
    Column("order_id", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("parked_ms", BigInteger, nullable=False),
)

# Every update a user can see, with the user's sequence, so WatchOrders can replay what a client
# missed (also across restarts); pruned after the retention period.
order_updates = Table(
    "order_updates",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("order_id", String(40), nullable=False),
    Column("snapshot", Text, nullable=False),
    Column("event_ms", BigInteger, nullable=False),
    Index("order_updates_time", "event_ms"),
)

user_sequences = Table(
    "user_sequences",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("last", BigInteger, nullable=False),
)

# An admin's per-user limits (users without a row get the configured defaults).
user_limits = Table(
    "user_limits",
    metadata,
    Column("user_id", String(40), primary_key=True),
    Column("orders_per_second", ExactDecimal(), nullable=False),
    Column("max_open_orders", Integer, nullable=False),
    Column("update_ms", BigInteger, nullable=False),
)

cursor = Table(
    "cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("sequence", BigInteger, nullable=False),
)

EXECUTIONS = "executions"

# The statements are plain SQL on the driver's cursor (sqlite3 keeps them prepared): SQLAlchemy's
# statement execution was most of the cost of a write measured here; the tables above stay the one
# definition of the schema. Money goes in and out as canonical 8-place text (``to_storage``).
ORDER_COLUMNS = (
    "order_id",
    "user_id",
    "client_order_id",
    "symbol",
    "base_asset",
    "quote_asset",
    "side",
    "type",
    "time_in_force",
    "quantity",
    "price",
    "stop_price",
    "expire_time_ms",
    "reserve_asset",
    "reserve_amount",
    "state",
    "filled_quantity",
    "filled_quote_quantity",
    "commission",
    "commission_asset",
    "reject_reason",
    "exchange_order_id",
    "cancel_requested",
    "expire_requested",
    "create_time_ms",
    "update_time_ms",
    "version",
)
_MUTABLE = (
    "state",
    "filled_quantity",
    "filled_quote_quantity",
    "commission",
    "commission_asset",
    "reject_reason",
    "exchange_order_id",
    "cancel_requested",
    "expire_requested",
    "update_time_ms",
    "version",
)
FILL_COLUMNS = (
    "fill_id",
    "order_id",
    "symbol",
    "side",
    "price",
    "quantity",
    "quote_quantity",
    "commission",
    "commission_asset",
    "is_maker",
    "trade_time_ms",
    "sequence",
)
SELECT_ORDER = f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders"
SQL_GET_ORDER = f"{SELECT_ORDER} WHERE order_id = ?"
SQL_FIND_BY_CLIENT_ID = f"{SELECT_ORDER} WHERE user_id = ? AND client_order_id = ?"
SQL_INSERT_ORDER = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) VALUES ({', '.join('?' * len(ORDER_COLUMNS))}) "
    "ON CONFLICT (user_id, client_order_id) DO NOTHING"
)
SQL_UPDATE_ORDER = f"UPDATE orders SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE order_id = ?"
SQL_DELETE_ORDER = "DELETE FROM orders WHERE order_id = ?"
SQL_FILL_EXISTS = "SELECT 1 FROM fills WHERE fill_id = ?"
SQL_INSERT_FILL = f"INSERT INTO fills ({', '.join(FILL_COLUMNS)}) VALUES ({', '.join('?' * len(FILL_COLUMNS))})"
SQL_INSERT_OUTBOX = "INSERT INTO outbox (order_id, kind, payload) VALUES (?, ?, ?)"
SQL_LAST_SEQUENCE = "SELECT last FROM user_sequences WHERE user_id = ?"
SQL_SET_SEQUENCE = (
    "INSERT INTO user_sequences (user_id, last) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET last = excluded.last"
)
SQL_INSERT_UPDATE = "INSERT INTO order_updates (user_id, sequence, order_id, snapshot, event_ms) VALUES (?, ?, ?, ?, ?)"
SQL_GET_CURSOR = f"SELECT sequence FROM cursor WHERE name = '{EXECUTIONS}'"
SQL_SET_CURSOR = (
    f"INSERT INTO cursor (name, sequence) VALUES ('{EXECUTIONS}', ?) "
    "ON CONFLICT (name) DO UPDATE SET sequence = excluded.sequence"
)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else to_storage(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _order_values(order: Order) -> tuple[Any, ...]:
    return (
        order.order_id,
        order.user_id,
        order.client_order_id,
        order.symbol,
        order.base_asset,
        order.quote_asset,
        order.side.value,
        order.type.value,
        order.time_in_force.value,
        to_storage(order.quantity),
        _text(order.price),
        _text(order.stop_price),
        order.expire_time_ms,
        order.reserve_asset,
        to_storage(order.reserve_amount),
        order.state.value,
        to_storage(order.filled_quantity),
        to_storage(order.filled_quote_quantity),
        to_storage(order.commission),
        order.commission_asset,
        order.reject_reason,
        order.exchange_order_id,
        int(order.cancel_requested),
        int(order.expire_requested),
        order.create_time_ms,
        order.update_time_ms,
        order.version,
    )


def _order_update_values(order: Order) -> tuple[Any, ...]:
    return (
        order.state.value,
        to_storage(order.filled_quantity),
        to_storage(order.filled_quote_quantity),
        to_storage(order.commission),
        order.commission_asset,
        order.reject_reason,
        order.exchange_order_id,
        int(order.cancel_requested),
        int(order.expire_requested),
        order.update_time_ms,
        order.version,
        order.order_id,
    )


def order_from_row(row: tuple[Any, ...]) -> Order:
    """An order from a row of ``SELECT_ORDER``."""
    (
        order_id,
        user_id,
        client_order_id,
        symbol,
        base_asset,
        quote_asset,
        side,
        type_,
        time_in_force,
        quantity,
        price,
        stop_price,
        expire_time_ms,
        reserve_asset,
        reserve_amount,
        state,
        filled_quantity,
        filled_quote_quantity,
        commission,
        commission_asset,
        reject_reason,
        exchange_order_id,
        cancel_requested,
        expire_requested,
        create_time_ms,
        update_time_ms,
        version,
    ) = row
    return Order(
        order_id=order_id,
        client_order_id=client_order_id,
        user_id=user_id,
        symbol=symbol,
        base_asset=base_asset,
        quote_asset=quote_asset,
        side=Side(side),
        type=OrderType(type_),
        time_in_force=TimeInForce(time_in_force),
        quantity=Decimal(quantity),
        price=_decimal(price),
        stop_price=_decimal(stop_price),
        expire_time_ms=expire_time_ms,
        reserve_asset=reserve_asset,
        reserve_amount=Decimal(reserve_amount),
        state=State(state),
        create_time_ms=create_time_ms,
        update_time_ms=update_time_ms,
        filled_quantity=Decimal(filled_quantity),
        filled_quote_quantity=Decimal(filled_quote_quantity),
        commission=Decimal(commission),
        commission_asset=commission_asset,
        reject_reason=reject_reason,
        exchange_order_id=exchange_order_id,
        cancel_requested=bool(cancel_requested),
        expire_requested=bool(expire_requested),
        version=version,
    )


def _fill_values(fill: Fill) -> tuple[Any, ...]:
    return (
        fill.fill_id,
        fill.order_id,
        fill.symbol,
        fill.side.value,
        to_storage(fill.price),
        to_storage(fill.quantity),
        to_storage(fill.quote_quantity),
        to_storage(fill.commission),
        fill.commission_asset,
        int(fill.is_maker),
        fill.trade_time_ms,
        fill.sequence,
    )


def fill_from_row(row: tuple[Any, ...]) -> Fill:
    """A fill from a row of ``FILL_COLUMNS``."""
    fill_id, order_id, symbol, side, price, quantity, quote, commission, asset, maker, trade_time, sequence = row
    return Fill(
        fill_id=fill_id,
        order_id=order_id,
        symbol=symbol,
        side=Side(side),
        price=Decimal(price),
        quantity=Decimal(quantity),
        quote_quantity=Decimal(quote),
        commission=Decimal(commission),
        commission_asset=asset,
        is_maker=bool(maker),
        trade_time_ms=trade_time,
        sequence=sequence,
    )


def encode_effect(effect: Effect) -> tuple[str, str]:
    """(kind, JSON payload) of a side effect; decimals as exact strings."""
    if isinstance(effect, SettleTrade):
        payload = {
            "trade_id": effect.trade_id,
            "order_id": effect.order_id,
            "user_id": effect.user_id,
            "debit_asset": effect.debit_asset,
            "debit_amount": fmt(effect.debit_amount),
            "credit_asset": effect.credit_asset,
            "credit_amount": fmt(effect.credit_amount),
            "fee_asset": effect.fee_asset,
            "fee_amount": fmt(effect.fee_amount),
            "trade_time_ms": effect.trade_time_ms,
            "exchange_fee_asset": effect.exchange_fee_asset,
            "exchange_fee_amount": fmt(effect.exchange_fee_amount),
        }
        return "settle", json.dumps(payload, separators=(",", ":"))
    payload = {
        "order_id": effect.order_id,
        "release_id": effect.release_id,
        "amount": None if effect.amount is None else fmt(effect.amount),
    }
    return "release", json.dumps(payload, separators=(",", ":"))


def decode_effect(kind: str, payload: str) -> Effect:
    """The side effect stored as ``(kind, payload)``."""
    data = json.loads(payload)
    if kind == "settle":
        return SettleTrade(
            trade_id=data["trade_id"],
            order_id=data["order_id"],
            user_id=data["user_id"],
            debit_asset=data["debit_asset"],
            debit_amount=Decimal(data["debit_amount"]),
            credit_asset=data["credit_asset"],
            credit_amount=Decimal(data["credit_amount"]),
            fee_asset=data["fee_asset"],
            fee_amount=Decimal(data["fee_amount"]),
            trade_time_ms=int(data["trade_time_ms"]),
            exchange_fee_asset=data.get("exchange_fee_asset", ""),
            exchange_fee_amount=Decimal(data.get("exchange_fee_amount") or "0"),
        )
    if kind == "release":
        amount = data.get("amount")
        return ReleaseFunds(
            order_id=data["order_id"],
            release_id=data["release_id"],
            amount=None if amount is None else Decimal(amount),
        )
    raise ValueError(f"unknown outbox kind {kind!r}")


class SqlTx:
    """``OrderTx`` over one SQLite connection inside a BEGIN IMMEDIATE transaction."""

    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw

    def get_order(self, order_id: str) -> Order | None:
        row = self.raw.execute(SQL_GET_ORDER, (order_id,)).fetchone()
        return None if row is None else order_from_row(row)

    def find_by_client_order_id(self, user_id: str, client_order_id: str) -> Order | None:
        row = self.raw.execute(SQL_FIND_BY_CLIENT_ID, (user_id, client_order_id)).fetchone()
        return None if row is None else order_from_row(row)

    def insert_order(self, order: Order) -> bool:
        return self.raw.execute(SQL_INSERT_ORDER, _order_values(order)).rowcount == 1

    def update_order(self, order: Order) -> None:
        self.raw.execute(SQL_UPDATE_ORDER, _order_update_values(order))

    def delete_order(self, order_id: str) -> None:
        self.raw.execute(SQL_DELETE_ORDER, (order_id,))

    def fill_exists(self, fill_id: str) -> bool:
        return self.raw.execute(SQL_FILL_EXISTS, (fill_id,)).fetchone() is not None

    def insert_fill(self, fill: Fill) -> None:
        self.raw.execute(SQL_INSERT_FILL, _fill_values(fill))

    def add_effect(self, effect: Effect) -> OutboxEntry:
        kind, payload = encode_effect(effect)
        cursor = self.raw.execute(SQL_INSERT_OUTBOX, (effect.order_id, kind, payload))
        assert cursor.lastrowid is not None
        return OutboxEntry(int(cursor.lastrowid), effect)

    def delete_effects(self, ids: Collection[int]) -> None:
        # A performed entry is never parked: a retry takes it off the parked list before it runs.
        self.raw.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def get_cursor(self) -> int:
        row = self.raw.execute(SQL_GET_CURSOR).fetchone()
        return int(row[0]) if row else 0

    def add_update(self, order: Order) -> int:
        row = self.raw.execute(SQL_LAST_SEQUENCE, (order.user_id,)).fetchone()
        sequence = (int(row[0]) if row else 0) + 1
        self.raw.execute(SQL_SET_SEQUENCE, (order.user_id, sequence))
        snapshot = json.dumps(_order_values(order), separators=(",", ":"))
        self.raw.execute(SQL_INSERT_UPDATE, (order.user_id, sequence, order.order_id, snapshot, order.update_time_ms))
        return sequence

    def set_cursor(self, sequence: int) -> None:
        self.raw.execute(SQL_SET_CURSOR, (sequence,))


class SqlOrderStore:
    """``OrderStore`` on a SQLite file: group commit on one writer thread, reads on a small pool.

    Writes go through ``shared.db.GroupCommit``: concurrent writes share ONE ``BEGIN IMMEDIATE``
    transaction, each in its own SAVEPOINT (a function that raises rolls back only its own work and
    gets its exception). Callers are answered only after the COMMIT, so what a use case saw written is
    durable before it takes its next step (a call to another service). One COMMIT, one fsync, per
    batch instead of per write is what lets the single SQLite writer keep up when many orders are in
    flight; an idle service still commits a lone write at once. A write whose caller gave up is still
    run (``skip_abandoned=False``): the use cases may have acted on the outcome they expected.
    """

    def __init__(self, url: str, *, synchronous: str = "FULL", max_batch: int = 128):
        self.engine = create_sqlite_engine(url, synchronous=synchronous)
        with self.engine.begin() as conn:
            metadata.create_all(conn)
        self.db = Database(self.engine, name="orders-read", readers=2)  # its reader threads serve the reads
        self.group: GroupCommit[SqlTx] = GroupCommit(
            self.engine,
            lambda conn: SqlTx(driver_connection(conn)),
            name="orders",
            max_batch=max_batch,
            shutdown_error=lambda: Unavailable("the order service is stopping", reason="SHUTTING_DOWN"),
            skip_abandoned=False,
            logger=log,
        )

    async def write(self, fn: Callable[[SqlTx], T]) -> T:
        return await self.group.write(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.db.read(lambda conn: fn(driver_connection(conn)))

    async def get_order(self, order_id: str) -> Order | None:
        def read(raw: sqlite3.Connection) -> Order | None:
            row = raw.execute(SQL_GET_ORDER, (order_id,)).fetchone()
            return None if row is None else order_from_row(row)

        return await self._read(read)

    async def list_orders(
        self,
        user_id: str,
        *,
        symbol: str,
        states: Collection[State] | None,
        before_order_id: str,
        limit: int,
    ) -> list[Order]:
        where = ["user_id = ?"]
        params: list[Any] = [user_id]
        if symbol:
            where.append("symbol = ?")
            params.append(symbol)
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(s.value for s in states)
        if before_order_id:
            where.append("order_id < ?")
            params.append(before_order_id)
        sql = f"{SELECT_ORDER} WHERE {' AND '.join(where)} ORDER BY order_id DESC LIMIT ?"
        params.append(limit)

        def read(raw: sqlite3.Connection) -> list[Order]:
            return [order_from_row(row) for row in raw.execute(sql, params)]

        return await self._read(read)

    async def list_fills(self, order_id: str, *, after_id: int, limit: int) -> list[tuple[int, Fill]]:
        sql = f"SELECT id, {', '.join(FILL_COLUMNS)} FROM fills WHERE order_id = ? AND id > ? ORDER BY id LIMIT ?"

        def read(raw: sqlite3.Connection) -> list[tuple[int, Fill]]:
            return [(row[0], fill_from_row(row[1:])) for row in raw.execute(sql, (order_id, after_id, limit))]

        return await self._read(read)

    async def list_trades(
        self,
        user_id: str,
        *,
        symbol: str,
        start_ms: int | None,
        end_ms: int | None,
        before: tuple[int, int] | None,
        limit: int,
    ) -> list[tuple[int, Fill]]:
        columns = ", ".join(f"f.{c}" for c in FILL_COLUMNS)
        where = ["o.user_id = ?"]
        params: list[Any] = [user_id]
        if symbol:
            where.append("f.symbol = ?")
            params.append(symbol)
        if start_ms is not None:
            where.append("f.trade_time_ms >= ?")
            params.append(start_ms)
        if end_ms is not None:
            where.append("f.trade_time_ms < ?")
            params.append(end_ms)
        if before is not None:
            where.append("(f.trade_time_ms < ? OR (f.trade_time_ms = ? AND f.id < ?))")
            params.extend((before[0], before[0], before[1]))
        sql = (
            f"SELECT f.id, {columns} FROM fills f JOIN orders o ON o.order_id = f.order_id "
            f"WHERE {' AND '.join(where)} ORDER BY f.trade_time_ms DESC, f.id DESC LIMIT ?"
        )
        params.append(limit)

        def read(raw: sqlite3.Connection) -> list[tuple[int, Fill]]:
            return [(row[0], fill_from_row(row[1:])) for row in raw.execute(sql, params)]

        return await self._read(read)

    async def active_orders(self, states: Collection[State], updated_before_ms: int | None = None) -> list[Order]:
        sql = f"{SELECT_ORDER} WHERE state IN ({', '.join('?' * len(states))})"
        params: list[Any] = [s.value for s in states]
        if updated_before_ms is not None:
            sql += " AND update_time_ms <= ?"
            params.append(updated_before_ms)
        sql += " ORDER BY order_id"

        def read(raw: sqlite3.Connection) -> list[Order]:
            return [order_from_row(row) for row in raw.execute(sql, params)]

        return await self._read(read)

    async def cancel_pending_orders(self, requested_before_ms: int) -> list[Order]:
        states = [s.value for s in State if s.value not in ("FILLED", "CANCELLED", "REJECTED", "EXPIRED")]
        sql = (
            f"{SELECT_ORDER} WHERE state IN ({', '.join('?' * len(states))}) "
            "AND (cancel_requested = 1 OR expire_requested = 1) AND update_time_ms <= ? ORDER BY order_id"
        )

        def read(raw: sqlite3.Connection) -> list[Order]:
            return [order_from_row(row) for row in raw.execute(sql, (*states, requested_before_ms))]

        return await self._read(read)

    async def get_orders(self, order_ids: Collection[str]) -> list[Order]:
        ids = list(order_ids)

        def read(raw: sqlite3.Connection) -> list[Order]:
            found: list[Order] = []
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[start : start + 500]
                sql = f"{SELECT_ORDER} WHERE order_id IN ({', '.join('?' * len(chunk))})"
                found.extend(order_from_row(row) for row in raw.execute(sql, chunk))
            return found

        return await self._read(read) if ids else []

    async def park_effect(self, entry_id: int, reason: str, attempts: int, parked_ms: int) -> None:
        def tx(t: SqlTx) -> None:
            t.raw.execute(
                "INSERT INTO parked_effects (entry_id, order_id, reason, attempts, parked_ms) "
                "SELECT id, order_id, ?, ?, ? FROM outbox WHERE id = ? "
                "ON CONFLICT (entry_id) DO UPDATE SET reason = excluded.reason, attempts = excluded.attempts, "
                "parked_ms = excluded.parked_ms",
                (reason[:2000], attempts, parked_ms, entry_id),
            )

        await self.write(tx)

    async def unpark_effect(self, entry_id: int) -> bool:
        return await self.write(
            lambda t: t.raw.execute("DELETE FROM parked_effects WHERE entry_id = ?", (entry_id,)).rowcount == 1
        )

    async def parked_effects(self) -> list[ParkedEffect]:
        def read(raw: sqlite3.Connection) -> list[ParkedEffect]:
            rows = raw.execute(
                "SELECT o.id, o.kind, o.payload, p.reason, p.attempts, p.parked_ms "
                "FROM parked_effects p JOIN outbox o ON o.id = p.entry_id ORDER BY p.entry_id"
            )
            return [
                ParkedEffect(OutboxEntry(row[0], decode_effect(row[1], row[2])), row[3], row[4], row[5]) for row in rows
            ]

        return await self._read(read)

    async def updates_after(self, user_id: str, after_sequence: int, limit: int) -> list[tuple[int, Order]]:
        sql = (
            "SELECT sequence, snapshot FROM order_updates WHERE user_id = ? AND sequence > ? ORDER BY sequence LIMIT ?"
        )

        def read(raw: sqlite3.Connection) -> list[tuple[int, Order]]:
            rows = raw.execute(sql, (user_id, after_sequence, limit))
            return [(int(row[0]), order_from_row(tuple(json.loads(row[1])))) for row in rows]

        return await self._read(read)

    async def first_kept_update(self, user_id: str) -> int | None:
        def read(raw: sqlite3.Connection) -> int | None:
            row = raw.execute("SELECT MIN(sequence) FROM order_updates WHERE user_id = ?", (user_id,)).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return await self._read(read)

    async def prune_updates(self, before_ms: int) -> int:
        # The newest update of each user is kept, so a user's sequence never restarts and a client
        # resuming from it still gets a seamless stream.
        return await self.write(
            lambda t: (
                t.raw.execute(
                    "DELETE FROM order_updates WHERE event_ms < ? AND sequence < "
                    "(SELECT last FROM user_sequences s WHERE s.user_id = order_updates.user_id)",
                    (before_ms,),
                ).rowcount
            )
        )

    async def user_limits(self) -> dict[str, UserLimits]:
        def read(raw: sqlite3.Connection) -> dict[str, UserLimits]:
            rows = raw.execute("SELECT user_id, orders_per_second, max_open_orders FROM user_limits")
            return {row[0]: UserLimits(Decimal(row[1]), int(row[2])) for row in rows}

        return await self._read(read)

    async def set_user_limits(self, user_id: str, limits: UserLimits | None) -> None:
        def tx(t: SqlTx) -> None:
            if limits is None:
                t.raw.execute("DELETE FROM user_limits WHERE user_id = ?", (user_id,))
                return
            t.raw.execute(
                "INSERT INTO user_limits (user_id, orders_per_second, max_open_orders, update_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET orders_per_second = excluded.orders_per_second, "
                "max_open_orders = excluded.max_open_orders, update_ms = excluded.update_ms",
                (user_id, to_storage(limits.orders_per_second), limits.max_open_orders, now_ms()),
            )

        await self.write(tx)

    async def pending_effects(self) -> list[OutboxEntry]:
        def read(raw: sqlite3.Connection) -> list[OutboxEntry]:
            rows = raw.execute("SELECT id, kind, payload FROM outbox ORDER BY id")
            return [OutboxEntry(row[0], decode_effect(row[1], row[2])) for row in rows]

        return await self._read(read)

    async def delete_effects(self, ids: Collection[int]) -> None:
        if ids:
            await self.write(lambda t: t.delete_effects(ids))

    async def get_cursor(self) -> int:
        def read(raw: sqlite3.Connection) -> int:
            row = raw.execute(SQL_GET_CURSOR).fetchone()
            return int(row[0]) if row else 0

        return await self._read(read)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self.group.close()
        self.db.close()
