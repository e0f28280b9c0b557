"""SQLAlchemy on SQLite, set up for money: WAL, foreign keys, busy timeout, BEGIN IMMEDIATE, exact decimals.

Facts that shaped this (see ../shared/reference/grpc-python-facts.md):
- SQLite has one writer. A transaction that reads and then writes fails at once with
  "database is locked" unless it began with BEGIN IMMEDIATE, so every write transaction does.
- ``Numeric`` on SQLite is a float: money is stored as canonical decimal text (``ExactDecimal``);
  never SUM or ORDER BY such a column in SQL, do the arithmetic in Python with Decimal.
- The async SQLAlchemy layer over aiosqlite was 3-4x slower than sync SQLAlchemy on a thread,
  so ``Database`` runs sync SQLAlchemy Core on one dedicated writer thread (plus reader threads).
- One COMMIT (one fsync) per write is what limits a single SQLite writer under load:
  ``GroupCommit`` runs concurrent writes together in one transaction, each in its own savepoint.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, String, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

from shared.errors import Unavailable
from shared.money import from_storage, to_storage

T = TypeVar("T")
C = TypeVar("C")

READ_ONLY = "trading_read_only"
DRIVER_TRANSACTION = "trading_driver_transaction"
"""Execution option of a connection whose transactions are begun and ended on its driver connection:
SQLAlchemy's (auto)begin then issues no BEGIN of its own (see ``GroupCommit``)."""


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
        options = conn.get_execution_options()
        if options.get(DRIVER_TRANSACTION):
            return
        if options.get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """Runs transactions off the event loop: writes on one dedicated thread, reads on a small pool.

    The writer thread keeps one connection and sends BEGIN IMMEDIATE and COMMIT to its sqlite3
    connection directly (``driver_transaction``): a pool checkout and a SQLAlchemy begin/commit per
    transaction cost 0.13 ms, ten times a small transaction's statements.
    """

    def __init__(self, engine: Engine, *, name: str = "db", readers: int = 2):
        self.engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix=f"{name}-reader")
        self._conn: Connection | None = None

    def _write_on_writer(self, fn: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = kept_connection(self.engine)
        with driver_transaction(self._conn):
            return fn(self._conn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction (a consistent snapshot) on the calling thread."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return fn(conn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one BEGIN IMMEDIATE transaction on the writer thread; commit unless it raises."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._write_on_writer, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read_sync, fn)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self._writer.submit(self._close_writer_connection).result()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()

    def _close_writer_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def driver_connection(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy connection."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def kept_connection(engine: Engine) -> Connection:
    """A connection for one writer thread to keep, whose transactions ``driver_transaction`` runs."""
    return engine.connect().execution_options(**{DRIVER_TRANSACTION: True})


@contextmanager
def driver_transaction(conn: Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the sqlite3 connection under a kept connection.

    The block gets the sqlite3 connection; if it raises, the transaction is rolled back. A block that
    ends the transaction itself (``ROLLBACK``) is not committed. SQLAlchemy statements on ``conn``
    join the transaction; their own bookkeeping is closed afterwards (no BEGIN was sent for it, see
    ``DRIVER_TRANSACTION``, so that sends nothing).
    """
    raw = driver_connection(conn)
    try:
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield raw
            if raw.in_transaction:
                raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
    finally:
        if conn.in_transaction():
            conn.rollback()


def _same(exc: Exception) -> Exception:
    return exc


def _stopping() -> Exception:
    return Unavailable("the service is stopping", reason="SHUTTING_DOWN")


Outcome = tuple[bool, Any]
"""(True, result) or (False, exception) of one write function."""


class GroupCommit(Generic[C]):
    """Group commit for a SQLite file: concurrent writes share one ``BEGIN IMMEDIATE`` transaction.

    Every ``write(fn)`` joins a queue. One task drains it: it takes everything queued so far (up to
    ``max_batch``) and runs it on one dedicated writer thread, over one connection kept for that
    thread, in ONE transaction. Each function runs in its own SAVEPOINT, so one that raises rolls
    back only its own work and gets its own exception while the others commit together; a lone
    function needs no savepoint (its failure rolls back the transaction). Callers are answered only
    after the COMMIT, so an acknowledged write is durable. While a batch runs new requests queue up,
    so batches grow with load and an idle service still commits a lone write at once. One COMMIT (and
    fsync) per batch instead of per write is what lets the single SQLite writer keep up.

    Each function is called as ``fn(context)`` where ``context = make_context(conn)`` is built once
    per batch from the kept SQLAlchemy connection ``conn`` (``driver_connection(conn)`` is its sqlite3
    connection). BEGIN, SAVEPOINT and COMMIT run on the sqlite3 connection (the fast path); SQLAlchemy
    statements on ``conn`` may still be used inside, they join the same transaction.

    - A request whose future is already done (the caller gave up: deadline, cancel) is not run at
      all, unless ``skip_abandoned`` is False.
    - If the transaction as a whole fails (BEGIN or COMMIT: nothing was written), every request gets
      ``error_mapper(exc)`` and the failure is logged on ``logger`` (with the traceback unless the
      mapped error is an ``Unavailable``, an expected and retryable condition such as a busy database).
    - Requests still queued when the draining task ends by cancellation (shutdown) get
      ``shutdown_error()``, by default ``Unavailable(..., reason="SHUTTING_DOWN")``.
    """

    def __init__(
        self,
        engine: Engine,
        make_context: Callable[[Connection], C],
        *,
        name: str = "db",
        max_batch: int = 64,
        error_mapper: Callable[[Exception], Exception] = _same,
        shutdown_error: Callable[[], Exception] = _stopping,
        skip_abandoned: bool = True,
        logger: logging.Logger | None = None,
    ):
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self._make_context = make_context
        self._error_mapper = error_mapper
        self._shutdown_error = shutdown_error
        self._skip_abandoned = skip_abandoned
        self._log = logger or logging.getLogger("shared.db")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer")
        self._queue: list[tuple[Callable[[C], Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._conn: Connection | None = None
        self._closed = False
        self.batches = 0
        """Write transactions committed (for tests and diagnostics)."""

    async def write(self, fn: Callable[[C], T]) -> T:
        """Run ``fn(context)`` in a write transaction (possibly shared with other writes); raise what it raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((fn, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: len(batch)]
                if self._skip_abandoned:
                    # A caller that gave up before its turn is not written at all.
                    batch = [(fn, future) for fn, future in batch if not future.done()]
                    if not batch:
                        continue
                try:
                    outcomes = await loop.run_in_executor(self._writer, self.run_batch, [fn for fn, _ in batch])
                except Exception as exc:
                    error = self._error_mapper(exc)
                    self._log.warning("write transaction failed", exc_info=not isinstance(error, Unavailable))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._drainer = None
            # Only non-empty if this task was cancelled (shutdown): nobody would serve these.
            stranded, self._queue = self._queue, []
            for _, future in stranded:
                if not future.done():
                    future.set_exception(self._shutdown_error())

    def _connection(self) -> Connection:
        # One connection kept for the writer thread: no pool checkout or SQLAlchemy transaction per batch.
        if self._conn is None:
            self._conn = kept_connection(self.engine)
        return self._conn

    def run_batch(self, fns: list[Callable[[C], Any]]) -> list[Outcome]:
        """Run ``fns`` in one write transaction on the calling thread, each in its own savepoint.

        Returns (True, result) or (False, exception) per function; raises only if the transaction
        as a whole fails (BEGIN or COMMIT), in which case nothing was written.
        """
        conn = self._connection()
        context = self._make_context(conn)
        outcomes: list[Outcome] = []
        with driver_transaction(conn) as raw:
            if len(fns) == 1:
                # Alone in the transaction: no savepoint needed, a failure rolls back everything.
                try:
                    outcomes.append((True, fns[0](context)))
                except Exception as exc:
                    raw.execute("ROLLBACK")
                    return [(False, exc)]
            else:
                for fn in fns:
                    raw.execute("SAVEPOINT job")
                    try:
                        result = fn(context)
                    except Exception as exc:
                        raw.execute("ROLLBACK TO job")
                        raw.execute("RELEASE job")
                        outcomes.append((False, exc))
                    else:
                        raw.execute("RELEASE job")
                        outcomes.append((True, result))
        self.batches += 1
        return outcomes

    def write_sync(self, fn: Callable[[C], T]) -> T:
        """Run ``fn(context)`` alone in one write transaction on the calling thread (tests, tools)."""
        [(ok, value)] = self.run_batch([fn])
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def drain(self) -> None:
        """Wait until every write queued so far has been answered."""
        if self._drainer is not None:
            await asyncio.shield(self._drainer)

    def close(self) -> None:
        """Wait for the running transaction, then close the writer connection and thread (not the engine)."""
        if self._closed:
            return
        self._closed = True
        self._writer.submit(self._close_connection).result()
        self._writer.shutdown(wait=True)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
