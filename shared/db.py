"""SQLAlchemy on SQLite, set up for money: WAL, foreign keys, busy timeout, BEGIN IMMEDIATE, exact decimals.

Facts that shaped this (see ../shared/reference/grpc-python-facts.md):
- SQLite has one writer. A transaction that reads and then writes fails at once with
  "database is locked" unless it began with BEGIN IMMEDIATE, so every write transaction does.
- ``Numeric`` on SQLite is a float: money is stored as canonical decimal text (``ExactDecimal``);
  never SUM or ORDER BY such a column in SQL, do the arithmetic in Python with Decimal.
- The async SQLAlchemy layer over aiosqlite was 3-4x slower than sync SQLAlchemy on a thread,
  so ``Database`` runs sync SQLAlchemy Core on one dedicated writer thread (plus reader threads).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, String, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

from shared.money import from_storage, to_storage

T = TypeVar("T")

READ_ONLY = "trading_read_only"


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as canonical fixed-point text with 8 places: exact, never a float."""

    impl = String(48)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, got {type(value).__name__}")
        return to_storage(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else from_storage(value)


def create_sqlite_engine(url: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> Engine:
    """Create an engine for a SQLite file (its folder is created) with the pragmas money needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(f"only SQLite URLs are supported, got {parsed.get_backend_name()}")
    database = parsed.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        pool_size=4,
        max_overflow=4,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """Runs transactions off the event loop: writes on one dedicated thread, reads on a small pool."""

    def __init__(self, engine: Engine, *, name: str = "db", readers: int = 2):
        self.engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix=f"{name}-reader")

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one BEGIN IMMEDIATE transaction on the calling thread; commit unless it raises."""
        with self.engine.connect() as conn, conn.begin():
            return fn(conn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction (a consistent snapshot) on the calling thread."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return fn(conn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one write transaction on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self.write_sync, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read_sync, fn)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
