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
from collections.abc import Callable, Collection
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
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.order_service.domain.model import (
    Effect,
    Fill,
    Order,
    OrderType,
    ReleaseFunds,
    SettleTrade,
    Side,
    TimeInForce,
)
from services.order_service.domain.states import State
from services.order_service.service.ports import OutboxEntry
from shared.db import Database, ExactDecimal, create_sqlite_engine
from shared.money import fmt

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
    Column("type", String(12), nullable=False),
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

cursor = Table(
    "cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("sequence", BigInteger, nullable=False),
)

EXECUTIONS = "executions"

# Statements built once: SQLAlchemy's statement construction was the main cost measured here.
_GET_ORDER = select(orders).where(orders.c.order_id == bindparam("order_id"))
_FIND_BY_CLIENT_ID = select(orders).where(
    orders.c.user_id == bindparam("user_id"), orders.c.client_order_id == bindparam("client_order_id")
)
_INSERT_ORDER = sqlite_insert(orders).on_conflict_do_nothing(index_elements=["user_id", "client_order_id"])
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
_UPDATE_ORDER = (
    update(orders)
    .where(orders.c.order_id == bindparam("b_order_id"))
    .values({name: bindparam(f"b_{name}") for name in _MUTABLE})
)
_DELETE_ORDER = delete(orders).where(orders.c.order_id == bindparam("order_id"))
_FILL_EXISTS = select(fills.c.id).where(fills.c.fill_id == bindparam("fill_id"))
_INSERT_FILL = insert(fills)
_INSERT_OUTBOX = insert(outbox)
_GET_CURSOR = select(cursor.c.sequence).where(cursor.c.name == EXECUTIONS)
_SET_CURSOR = (
    sqlite_insert(cursor)
    .values(name=EXECUTIONS, sequence=bindparam("sequence"))
    .on_conflict_do_update(index_elements=["name"], set_={"sequence": bindparam("sequence")})
)


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "user_id": order.user_id,
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "base_asset": order.base_asset,
        "quote_asset": order.quote_asset,
        "side": order.side.value,
        "type": order.type.value,
        "time_in_force": order.time_in_force.value,
        "quantity": order.quantity,
        "price": order.price,
        "stop_price": order.stop_price,
        "expire_time_ms": order.expire_time_ms,
        "reserve_asset": order.reserve_asset,
        "reserve_amount": order.reserve_amount,
        "state": order.state.value,
        "filled_quantity": order.filled_quantity,
        "filled_quote_quantity": order.filled_quote_quantity,
        "commission": order.commission,
        "commission_asset": order.commission_asset,
        "reject_reason": order.reject_reason,
        "exchange_order_id": order.exchange_order_id,
        "cancel_requested": order.cancel_requested,
        "expire_requested": order.expire_requested,
        "create_time_ms": order.create_time_ms,
        "update_time_ms": order.update_time_ms,
        "version": order.version,
    }


def _order_from_row(row: Any) -> Order:
    m = row._mapping
    return Order(
        order_id=m["order_id"],
        client_order_id=m["client_order_id"],
        user_id=m["user_id"],
        symbol=m["symbol"],
        base_asset=m["base_asset"],
        quote_asset=m["quote_asset"],
        side=Side(m["side"]),
        type=OrderType(m["type"]),
        time_in_force=TimeInForce(m["time_in_force"]),
        quantity=m["quantity"],
        price=m["price"],
        stop_price=m["stop_price"],
        expire_time_ms=m["expire_time_ms"],
        reserve_asset=m["reserve_asset"],
        reserve_amount=m["reserve_amount"],
        state=State(m["state"]),
        create_time_ms=m["create_time_ms"],
        update_time_ms=m["update_time_ms"],
        filled_quantity=m["filled_quantity"],
        filled_quote_quantity=m["filled_quote_quantity"],
        commission=m["commission"],
        commission_asset=m["commission_asset"],
        reject_reason=m["reject_reason"],
        exchange_order_id=m["exchange_order_id"],
        cancel_requested=bool(m["cancel_requested"]),
        expire_requested=bool(m["expire_requested"]),
        version=m["version"],
    )


def _fill_row(fill: Fill) -> dict[str, Any]:
    return {
        "fill_id": fill.fill_id,
        "order_id": fill.order_id,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "price": fill.price,
        "quantity": fill.quantity,
        "quote_quantity": fill.quote_quantity,
        "commission": fill.commission,
        "commission_asset": fill.commission_asset,
        "is_maker": fill.is_maker,
        "trade_time_ms": fill.trade_time_ms,
        "sequence": fill.sequence,
    }


def _fill_from_row(row: Any) -> Fill:
    m = row._mapping
    return Fill(
        fill_id=m["fill_id"],
        order_id=m["order_id"],
        symbol=m["symbol"],
        side=Side(m["side"]),
        price=m["price"],
        quantity=m["quantity"],
        quote_quantity=m["quote_quantity"],
        commission=m["commission"],
        commission_asset=m["commission_asset"],
        is_maker=bool(m["is_maker"]),
        trade_time_ms=m["trade_time_ms"],
        sequence=m["sequence"],
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
    """``OrderTx`` over one SQLAlchemy connection inside a BEGIN IMMEDIATE transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def get_order(self, order_id: str) -> Order | None:
        row = self.conn.execute(_GET_ORDER, {"order_id": order_id}).first()
        return None if row is None else _order_from_row(row)

    def find_by_client_order_id(self, user_id: str, client_order_id: str) -> Order | None:
        row = self.conn.execute(_FIND_BY_CLIENT_ID, {"user_id": user_id, "client_order_id": client_order_id}).first()
        return None if row is None else _order_from_row(row)

    def insert_order(self, order: Order) -> bool:
        return self.conn.execute(_INSERT_ORDER, _order_row(order)).rowcount == 1

    def update_order(self, order: Order) -> None:
        params = {f"b_{name}": getattr(order, name) for name in _MUTABLE}
        params["b_state"] = order.state.value
        params["b_order_id"] = order.order_id
        self.conn.execute(_UPDATE_ORDER, params)

    def delete_order(self, order_id: str) -> None:
        self.conn.execute(_DELETE_ORDER, {"order_id": order_id})

    def fill_exists(self, fill_id: str) -> bool:
        return self.conn.execute(_FILL_EXISTS, {"fill_id": fill_id}).first() is not None

    def insert_fill(self, fill: Fill) -> None:
        self.conn.execute(_INSERT_FILL, _fill_row(fill))

    def add_effect(self, effect: Effect) -> OutboxEntry:
        kind, payload = encode_effect(effect)
        result = self.conn.execute(_INSERT_OUTBOX, {"order_id": effect.order_id, "kind": kind, "payload": payload})
        key = result.inserted_primary_key
        assert key is not None
        return OutboxEntry(int(key[0]), effect)

    def get_cursor(self) -> int:
        value = self.conn.execute(_GET_CURSOR).scalar()
        return int(value or 0)

    def set_cursor(self, sequence: int) -> None:
        self.conn.execute(_SET_CURSOR, {"sequence": sequence})


class SqlOrderStore:
    """``OrderStore`` on a SQLite file."""

    def __init__(self, url: str, *, synchronous: str = "FULL"):
        self.engine = create_sqlite_engine(url, synchronous=synchronous)
        metadata.create_all(self.engine)
        self.db = Database(self.engine, name="orders", readers=2)

    async def write(self, fn: Callable[[SqlTx], T]) -> T:
        return await self.db.write(lambda conn: fn(SqlTx(conn)))

    def write_sync(self, fn: Callable[[SqlTx], T]) -> T:
        """Run ``fn`` in one write transaction on the calling thread (tests, tools)."""
        return self.db.write_sync(lambda conn: fn(SqlTx(conn)))

    async def get_order(self, order_id: str) -> Order | None:
        def read(conn: Connection) -> Order | None:
            row = conn.execute(_GET_ORDER, {"order_id": order_id}).first()
            return None if row is None else _order_from_row(row)

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
        query = select(orders).where(orders.c.user_id == user_id)
        if symbol:
            query = query.where(orders.c.symbol == symbol)
        if states is not None:
            query = query.where(orders.c.state.in_([s.value for s in states]))
        if before_order_id:
            query = query.where(orders.c.order_id < before_order_id)
        query = query.order_by(orders.c.order_id.desc()).limit(limit)

        def read(conn: Connection) -> list[Order]:
            return [_order_from_row(row) for row in conn.execute(query)]

        return await self.db.read(read)

    async def list_fills(self, order_id: str, *, after_id: int, limit: int) -> list[tuple[int, Fill]]:
        query = (
            select(fills).where(fills.c.order_id == order_id, fills.c.id > after_id).order_by(fills.c.id).limit(limit)
        )

        def read(conn: Connection) -> list[tuple[int, Fill]]:
            return [(row.id, _fill_from_row(row)) for row in conn.execute(query)]

        return await self.db.read(read)

    async def active_orders(self, states: Collection[State], updated_before_ms: int | None = None) -> list[Order]:
        query = select(orders).where(orders.c.state.in_([s.value for s in states]))
        if updated_before_ms is not None:
            query = query.where(orders.c.update_time_ms < updated_before_ms)
        query = query.order_by(orders.c.order_id)

        def read(conn: Connection) -> list[Order]:
            return [_order_from_row(row) for row in conn.execute(query)]

        return await self.db.read(read)

    async def pending_effects(self) -> list[OutboxEntry]:
        query = select(outbox).order_by(outbox.c.id)

        def read(conn: Connection) -> list[OutboxEntry]:
            return [OutboxEntry(row.id, decode_effect(row.kind, row.payload)) for row in conn.execute(query)]

        return await self.db.read(read)

    async def delete_effects(self, ids: Collection[int]) -> None:
        if not ids:
            return
        statement = delete(outbox).where(outbox.c.id.in_(list(ids)))
        await self.db.write(lambda conn: conn.execute(statement))

    async def get_cursor(self) -> int:
        def read(conn: Connection) -> int:
            return int(conn.execute(_GET_CURSOR).scalar() or 0)

        return await self.db.read(read)

    def close(self) -> None:
        self.db.close()
