"""Tables of the order service and the store over them (SQLite or PostgreSQL through ``shared.db``).

Tables:
- ``orders``: one row per order; UNIQUE(user_id, client_order_id) makes PlaceOrder idempotent.
- ``fills``: one row per exchange trade; the unique ``fill_id`` ("<symbol>:<trade id>") is what
  makes a trade apply exactly once.
- ``outbox``: side effects owed to the user service (SettleTrade, ReleaseFunds), written in the
  same transaction as the change that causes them and deleted once performed.
- ``cursor``: the sequence of the last gateway execution applied, moved in the same transaction.

Money is canonical decimal text (``ExactDecimal``); times are integer Unix milliseconds. The schema
is made by the Alembic history in ``migrations/`` (``HISTORY``). The statements of the write path
are Core, compiled once per engine and run on the writer's DB-API cursor (``shared.db.Statement``):
SQLAlchemy's statement execution was most of the cost of a write measured here. Reads with
optional filters are Core statements run through SQLAlchemy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
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
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
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
from shared.db import (
    Cursor,
    Database,
    ExactDecimal,
    GroupCommit,
    Statement,
    create_db_engine,
    decimal_text,
    optional_decimal,
    optional_text,
    upsert,
)
from shared.errors import Unavailable
from shared.migrations import History, upgrade
from shared.money import fmt
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

HISTORY = History(
    "order_service",
    Path(__file__).parent / "migrations",
    releases=(
        (
            "0003",
            frozenset(
                {
                    "orders",
                    "fills",
                    "outbox",
                    "cursor",
                    "parked_effects",
                    "order_updates",
                    "user_sequences",
                    "user_limits",
                }
            ),
        ),
        (
            "0002",
            frozenset({"orders", "fills", "outbox", "cursor", "parked_effects", "order_updates", "user_sequences"}),
        ),
        ("0001", frozenset({"orders", "fills", "outbox", "cursor"})),
    ),
)
"""The order store's migration history; ``releases`` are the schemas of databases made before it had one."""

ORDER_COLUMNS = tuple(c.name for c in orders.columns)
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
FILL_COLUMNS = tuple(c.name for c in fills.columns if c.name != "id")
_FILL = tuple(fills.c[c] for c in FILL_COLUMNS)
_OUTBOX = (outbox.c.id, outbox.c.kind, outbox.c.payload)

SELECT_ORDER = select(orders)
_GET_ORDER = Statement(SELECT_ORDER.where(orders.c.order_id == bindparam("order_id")))
_NEWEST_ORDER_ID = Statement(select(func.max(orders.c.order_id)))
_FIND_BY_CLIENT_ID = Statement(
    SELECT_ORDER.where(
        orders.c.user_id == bindparam("user_id"), orders.c.client_order_id == bindparam("client_order_id")
    )
)
_INSERT_ORDER = Statement(upsert(orders, ["user_id", "client_order_id"]), ORDER_COLUMNS)
_UPDATE_ORDER = Statement(
    update(orders).where(orders.c.order_id == bindparam("b_order_id")).values({c: bindparam(c) for c in _MUTABLE})
)
_DELETE_ORDER = Statement(delete(orders).where(orders.c.order_id == bindparam("order_id")))
_FILL_EXISTS = Statement(select(fills.c.id).where(fills.c.fill_id == bindparam("fill_id")))
_INSERT_FILL = Statement(insert(fills), FILL_COLUMNS)
_INSERT_OUTBOX = Statement(insert(outbox).returning(outbox.c.id), ["order_id", "kind", "payload"])
_DELETE_OUTBOX = Statement(delete(outbox).where(outbox.c.id == bindparam("id")))
_LAST_SEQUENCE = Statement(select(user_sequences.c.last).where(user_sequences.c.user_id == bindparam("user_id")))
_SET_SEQUENCE = Statement(upsert(user_sequences, ["user_id"], ["last"]), ["user_id", "last"])
_INSERT_UPDATE = Statement(insert(order_updates), ["user_id", "sequence", "order_id", "snapshot", "event_ms"])
_GET_CURSOR = Statement(select(cursor.c.sequence).where(cursor.c.name == bindparam("name")))
_SET_CURSOR = Statement(upsert(cursor, ["name"], ["sequence"]), ["name", "sequence"])
_OUTBOX_ORDER = Statement(select(outbox.c.order_id).where(outbox.c.id == bindparam("id")))
_PARK = Statement(
    upsert(parked_effects, ["entry_id"], ["reason", "attempts", "parked_ms"]),
    ["entry_id", "order_id", "reason", "attempts", "parked_ms"],
)
_UNPARK = Statement(delete(parked_effects).where(parked_effects.c.entry_id == bindparam("entry_id")))
_SET_USER_LIMITS = Statement(
    upsert(user_limits, ["user_id"], ["orders_per_second", "max_open_orders", "update_ms"]),
    ["user_id", "orders_per_second", "max_open_orders", "update_ms"],
)
_FINAL = ("FILLED", "CANCELLED", "REJECTED", "EXPIRED")


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
        decimal_text(order.quantity),
        optional_text(order.price),
        optional_text(order.stop_price),
        order.expire_time_ms,
        order.reserve_asset,
        decimal_text(order.reserve_amount),
        order.state.value,
        decimal_text(order.filled_quantity),
        decimal_text(order.filled_quote_quantity),
        decimal_text(order.commission),
        order.commission_asset,
        order.reject_reason,
        order.exchange_order_id,
        bool(order.cancel_requested),
        bool(order.expire_requested),
        order.create_time_ms,
        order.update_time_ms,
        order.version,
    )


def _order_update_values(order: Order) -> dict[str, Any]:
    return {
        "b_order_id": order.order_id,
        "state": order.state.value,
        "filled_quantity": decimal_text(order.filled_quantity),
        "filled_quote_quantity": decimal_text(order.filled_quote_quantity),
        "commission": decimal_text(order.commission),
        "commission_asset": order.commission_asset,
        "reject_reason": order.reject_reason,
        "exchange_order_id": order.exchange_order_id,
        "cancel_requested": bool(order.cancel_requested),
        "expire_requested": bool(order.expire_requested),
        "update_time_ms": order.update_time_ms,
        "version": order.version,
    }


def order_from_row(row: Any) -> Order:
    """An order from a row of ``SELECT_ORDER`` (or a stored snapshot: ``_order_values``)."""
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
        price=optional_decimal(price),
        stop_price=optional_decimal(stop_price),
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
        decimal_text(fill.price),
        decimal_text(fill.quantity),
        decimal_text(fill.quote_quantity),
        decimal_text(fill.commission),
        fill.commission_asset,
        bool(fill.is_maker),
        fill.trade_time_ms,
        fill.sequence,
    )


def fill_from_row(row: Any) -> Fill:
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
    """``OrderTx`` over the writer's connection inside a write transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.cursor = Cursor(conn)

    def get_order(self, order_id: str) -> Order | None:
        row = self.cursor.one(_GET_ORDER, {"order_id": order_id})
        return None if row is None else order_from_row(row)

    def find_by_client_order_id(self, user_id: str, client_order_id: str) -> Order | None:
        row = self.cursor.one(_FIND_BY_CLIENT_ID, {"user_id": user_id, "client_order_id": client_order_id})
        return None if row is None else order_from_row(row)

    def insert_order(self, order: Order) -> bool:
        values = dict(zip(ORDER_COLUMNS, _order_values(order), strict=True))
        return bool(self.cursor.execute(_INSERT_ORDER, values).rowcount == 1)

    def update_order(self, order: Order) -> None:
        self.cursor.execute(_UPDATE_ORDER, _order_update_values(order))

    def delete_order(self, order_id: str) -> None:
        self.cursor.execute(_DELETE_ORDER, {"order_id": order_id})

    def fill_exists(self, fill_id: str) -> bool:
        return self.cursor.one(_FILL_EXISTS, {"fill_id": fill_id}) is not None

    def insert_fill(self, fill: Fill) -> None:
        self.cursor.execute(_INSERT_FILL, dict(zip(FILL_COLUMNS, _fill_values(fill), strict=True)))

    def add_effect(self, effect: Effect) -> OutboxEntry:
        kind, payload = encode_effect(effect)
        row = self.cursor.one(_INSERT_OUTBOX, {"order_id": effect.order_id, "kind": kind, "payload": payload})
        return OutboxEntry(int(row[0]), effect)

    def delete_effects(self, ids: Collection[int]) -> None:
        # A performed entry is never parked: a retry takes it off the parked list before it runs.
        self.cursor.many(_DELETE_OUTBOX, [{"id": i} for i in ids])

    def get_cursor(self) -> int:
        row = self.cursor.one(_GET_CURSOR, {"name": EXECUTIONS})
        return int(row[0]) if row else 0

    def add_update(self, order: Order) -> int:
        row = self.cursor.one(_LAST_SEQUENCE, {"user_id": order.user_id})
        sequence = (int(row[0]) if row else 0) + 1
        self.cursor.execute(_SET_SEQUENCE, {"user_id": order.user_id, "last": sequence})
        snapshot = json.dumps(_order_values(order), separators=(",", ":"))
        self.cursor.execute(
            _INSERT_UPDATE,
            {
                "user_id": order.user_id,
                "sequence": sequence,
                "order_id": order.order_id,
                "snapshot": snapshot,
                "event_ms": order.update_time_ms,
            },
        )
        return sequence

    def set_cursor(self, sequence: int) -> None:
        self.cursor.execute(_SET_CURSOR, {"name": EXECUTIONS, "sequence": sequence})


class SqlOrderStore:
    """``OrderStore`` on ``shared.db``: group commit on one writer thread, reads on a small pool.

    Writes go through ``shared.db.GroupCommit``: concurrent writes share ONE write transaction (BEGIN
    IMMEDIATE on SQLite), each in its own SAVEPOINT (a function that raises rolls back only its own
    work and gets its exception). Callers are answered only after the COMMIT, so what a use case saw
    written is durable before it takes its next step (a call to another service). One COMMIT, one
    fsync, per batch instead of per write is what lets the single writer keep up when many orders are
    in flight; an idle service still commits a lone write at once. A write whose caller gave up is
    still run (``skip_abandoned=False``): the use cases may have acted on the outcome they expected.
    The database is migrated to the newest schema revision when the store is made.
    """

    def __init__(self, url: str, *, synchronous: str = "FULL", max_batch: int = 128):
        self.engine = create_db_engine(url, synchronous=synchronous)
        try:
            upgrade(self.engine, HISTORY)
        except BaseException:
            self.engine.dispose()
            raise
        self.db = Database(self.engine, name="orders-read", readers=2)  # its reader threads serve the reads
        self.group: GroupCommit[SqlTx] = GroupCommit(
            self.engine,
            SqlTx,
            name="orders",
            max_batch=max_batch,
            shutdown_error=lambda: Unavailable("the order service is stopping", reason="SHUTTING_DOWN"),
            skip_abandoned=False,
            logger=log,
        )

    def hurry(self) -> None:
        self.group.hurry()

    async def write(self, fn: Callable[[SqlTx], T], *, defer: float | None = None) -> T:
        return await self.group.write(fn, defer=defer)

    async def _rows(self, statement: Any, convert: Callable[[Any], T]) -> list[T]:
        """Run a Core SELECT in a read transaction; ``convert`` each row."""
        return await self.db.read(lambda conn: [convert(row) for row in conn.execute(statement)])

    async def get_order(self, order_id: str) -> Order | None:
        def read(conn: Connection) -> Order | None:
            row = Cursor(conn).one(_GET_ORDER, {"order_id": order_id})
            return None if row is None else order_from_row(row)

        return await self.db.read(read)

    async def list_orders(
        self,
        user_id: str,
        *,
        symbol: str,
        states: Collection[State] | None,
        before_order_id: str,
        limit: int,
    ) -> list[Order]:
        query = SELECT_ORDER.where(orders.c.user_id == user_id)
        if symbol:
            query = query.where(orders.c.symbol == symbol)
        if states is not None:
            query = query.where(orders.c.state.in_([s.value for s in states]))
        if before_order_id:
            query = query.where(orders.c.order_id < before_order_id)
        return await self._rows(query.order_by(orders.c.order_id.desc()).limit(limit), order_from_row)

    async def list_fills(self, order_id: str, *, after_id: int, limit: int) -> list[tuple[int, Fill]]:
        query = (
            select(fills.c.id, *_FILL)
            .where(fills.c.order_id == order_id, fills.c.id > after_id)
            .order_by(fills.c.id)
            .limit(limit)
        )
        return await self._rows(query, lambda row: (row[0], fill_from_row(row[1:])))

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
        query = select(fills.c.id, *_FILL).join(orders, orders.c.order_id == fills.c.order_id)
        query = query.where(orders.c.user_id == user_id)
        if symbol:
            query = query.where(fills.c.symbol == symbol)
        if start_ms is not None:
            query = query.where(fills.c.trade_time_ms >= start_ms)
        if end_ms is not None:
            query = query.where(fills.c.trade_time_ms < end_ms)
        if before is not None:
            query = query.where(
                or_(
                    fills.c.trade_time_ms < before[0],
                    and_(fills.c.trade_time_ms == before[0], fills.c.id < before[1]),
                )
            )
        query = query.order_by(fills.c.trade_time_ms.desc(), fills.c.id.desc()).limit(limit)
        return await self._rows(query, lambda row: (row[0], fill_from_row(row[1:])))

    async def active_orders(self, states: Collection[State], updated_before_ms: int | None = None) -> list[Order]:
        query = SELECT_ORDER.where(orders.c.state.in_([s.value for s in states]))
        if updated_before_ms is not None:
            query = query.where(orders.c.update_time_ms <= updated_before_ms)
        return await self._rows(query.order_by(orders.c.order_id), order_from_row)

    async def cancel_pending_orders(self, requested_before_ms: int) -> list[Order]:
        query = SELECT_ORDER.where(
            orders.c.state.in_([s.value for s in State if s.value not in _FINAL]),
            or_(orders.c.cancel_requested.is_(True), orders.c.expire_requested.is_(True)),
            orders.c.update_time_ms <= requested_before_ms,
        ).order_by(orders.c.order_id)
        return await self._rows(query, order_from_row)

    async def newest_order_id(self) -> str:
        def read(conn: Connection) -> str:
            row = Cursor(conn).one(_NEWEST_ORDER_ID)
            return str(row[0]) if row is not None and row[0] is not None else ""

        return await self.db.read(read)

    async def get_orders(self, order_ids: Collection[str]) -> list[Order]:
        ids = list(order_ids)

        def read(conn: Connection) -> list[Order]:
            found: list[Order] = []
            for start in range(0, len(ids), 500):  # within SQLite's bound-parameter limit
                query = SELECT_ORDER.where(orders.c.order_id.in_(ids[start : start + 500]))
                found.extend(order_from_row(row) for row in conn.execute(query))
            return found

        return await self.db.read(read) if ids else []

    async def park_effect(self, entry_id: int, reason: str, attempts: int, parked_ms: int) -> None:
        def tx(t: SqlTx) -> None:
            row = t.cursor.one(_OUTBOX_ORDER, {"id": entry_id})
            if row is None:
                return  # performed meanwhile: nothing to park
            t.cursor.execute(
                _PARK,
                {
                    "entry_id": entry_id,
                    "order_id": row[0],
                    "reason": reason[:2000],
                    "attempts": attempts,
                    "parked_ms": parked_ms,
                },
            )

        await self.write(tx)

    async def unpark_effect(self, entry_id: int) -> bool:
        return await self.write(lambda t: t.cursor.execute(_UNPARK, {"entry_id": entry_id}).rowcount == 1)

    async def parked_effects(self) -> list[ParkedEffect]:
        query = (
            select(*_OUTBOX, parked_effects.c.reason, parked_effects.c.attempts, parked_effects.c.parked_ms)
            .join(outbox, outbox.c.id == parked_effects.c.entry_id)
            .order_by(parked_effects.c.entry_id)
        )
        return await self._rows(
            query,
            lambda row: ParkedEffect(OutboxEntry(row[0], decode_effect(row[1], row[2])), row[3], row[4], row[5]),
        )

    async def updates_after(self, user_id: str, after_sequence: int, limit: int) -> list[tuple[int, Order]]:
        query = (
            select(order_updates.c.sequence, order_updates.c.snapshot)
            .where(order_updates.c.user_id == user_id, order_updates.c.sequence > after_sequence)
            .order_by(order_updates.c.sequence)
            .limit(limit)
        )
        return await self._rows(query, lambda row: (int(row[0]), order_from_row(tuple(json.loads(row[1])))))

    async def first_kept_update(self, user_id: str) -> int | None:
        query = select(func.min(order_updates.c.sequence)).where(order_updates.c.user_id == user_id)
        [first] = await self._rows(query, lambda row: row[0])
        return None if first is None else int(first)

    async def prune_updates(self, before_ms: int) -> int:
        # The newest update of each user is kept, so a user's sequence never restarts and a client
        # resuming from it still gets a seamless stream.
        newest = (
            select(user_sequences.c.last).where(user_sequences.c.user_id == order_updates.c.user_id).scalar_subquery()
        )
        statement = delete(order_updates).where(order_updates.c.event_ms < before_ms, order_updates.c.sequence < newest)
        return await self.write(lambda t: int(t.conn.execute(statement).rowcount))

    async def user_limits(self) -> dict[str, UserLimits]:
        query = select(user_limits.c.user_id, user_limits.c.orders_per_second, user_limits.c.max_open_orders)
        rows = await self._rows(query, lambda row: (row[0], UserLimits(Decimal(row[1]), int(row[2]))))
        return dict(rows)

    async def set_user_limits(self, user_id: str, limits: UserLimits | None) -> None:
        def tx(t: SqlTx) -> None:
            if limits is None:
                t.conn.execute(delete(user_limits).where(user_limits.c.user_id == user_id))
                return
            t.cursor.execute(
                _SET_USER_LIMITS,
                {
                    "user_id": user_id,
                    "orders_per_second": decimal_text(limits.orders_per_second),
                    "max_open_orders": limits.max_open_orders,
                    "update_ms": now_ms(),
                },
            )

        await self.write(tx)

    async def pending_effects(self) -> list[OutboxEntry]:
        query = select(*_OUTBOX).order_by(outbox.c.id)
        return await self._rows(query, lambda row: OutboxEntry(row[0], decode_effect(row[1], row[2])))

    async def delete_effects(self, ids: Collection[int]) -> None:
        if ids:
            await self.write(lambda t: t.delete_effects(ids))

    async def get_cursor(self) -> int:
        def read(conn: Connection) -> int:
            row = Cursor(conn).one(_GET_CURSOR, {"name": EXECUTIONS})
            return int(row[0]) if row else 0

        return await self.db.read(read)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self.group.close()
        self.db.close()
