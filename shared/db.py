"""One persistence layer for the three services, on SQLite or PostgreSQL (psycopg 3).

Everything that knows which engine is under a service is here (and in ``shared.migrations``):
the services write SQLAlchemy Core tables and dialect-neutral statements, and this module gives
them the engine, the exact decimal type, the group-commit writer, reads on a thread pool, and
statements compiled once for the engine and run on the DB-API cursor.

Facts that shaped this:
- SQLite has one writer. A transaction that reads and then writes fails at once with
  "database is locked" unless it began with BEGIN IMMEDIATE, so every write transaction does.
  PostgreSQL takes row locks instead: a write transaction's reads of rows it will change use
  ``SELECT ... FOR UPDATE`` (``with_for_update()``, which renders nothing on SQLite).
- ``Numeric`` on SQLite is a float: money is stored as canonical decimal text (``ExactDecimal``),
  on both engines, so a database moves between them unchanged; never SUM or ORDER BY such a
  column in SQL, do the arithmetic in Python with Decimal.
- The async SQLAlchemy layer was 3-4x slower than sync SQLAlchemy on a thread, and building and
  executing Core statements cost more than SQLite's own work: writes run on one dedicated thread
  over one kept connection, with statements compiled once (``Statement``) and run on the DB-API
  cursor (``Cursor``), BEGIN/SAVEPOINT/COMMIT sent to the driver connection directly.
- One COMMIT (one fsync) per write is what limits a writer under load: ``GroupCommit`` runs
  concurrent writes together in one transaction, each in its own savepoint.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from sqlalchemy import Connection, Engine, String, Table, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import TypeDecorator

from shared.config import ConfigError
from shared.errors import Unavailable
from shared.money import SCALE, from_storage, to_storage

T = TypeVar("T")
C = TypeVar("C")

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

READ_ONLY = "trading_read_only"
DRIVER_TRANSACTION = "trading_driver_transaction"
"""Execution option of a connection whose transactions are begun and ended on its driver connection:
SQLAlchemy's (auto)begin then issues no BEGIN of its own (see ``GroupCommit``)."""


# --- the exact decimal type ---------------------------------------------------------------------------


def decimal_text(value: Decimal, places: int | None = SCALE) -> str:
    """Storage text of ``value``: the ledger's canonical 8 places, or (``places=None``) its own digits.

    Raises ValueError rather than round: a value with more than 8 places is refused for the ledger.
    """
    if places is None:
        return format(value, "f")
    text = f"{value:.{SCALE}f}"
    if Decimal(text) != value:  # it had more than 8 places (the cheapest exact check measured here)
        raise ValueError(f"{value} has more than {SCALE} decimal places")
    return text


def optional_text(value: Decimal | None, places: int | None = SCALE) -> str | None:
    """``decimal_text``, passing None through."""
    return None if value is None else decimal_text(value, places)


def optional_decimal(value: str | None) -> Decimal | None:
    """The Decimal of a stored text, passing None through."""
    return None if value is None else Decimal(value)


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as exact text on both engines (TEXT affinity on SQLite), never a float.

    ``ExactDecimal()`` keeps the ledger's canonical 8 places ("12.50000000"); ``ExactDecimal(None)``
    keeps the value's own digits (the exchange's figures can have more places than the ledger's).
    Statements run through ``Cursor`` take ``decimal_text(value, places)`` as the parameter.
    """

    impl = String
    cache_ok = True

    def __init__(self, places: int | None = SCALE, length: int = 48):
        if places not in (SCALE, None):
            raise ValueError(f"ExactDecimal keeps {SCALE} places or the value's own, not {places}")
        super().__init__(length)
        self.places = places

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, got {type(value).__name__}")
        return to_storage(value) if self.places == SCALE else format(value, "f")

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return from_storage(value) if self.places == SCALE else Decimal(value)


# --- engines ------------------------------------------------------------------------------------------


def check_db_url(name: str, url: str) -> str:
    """Return ``url`` if the services can run on it (a SQLite file or ``postgresql+psycopg``); else ConfigError."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"{name} is not a database URL: {url!r:.80}") from None
    if parsed.get_backend_name() == SQLITE:
        if not parsed.database or parsed.database == ":memory:":
            # In-memory SQLite would give every pooled connection its own empty database.
            raise ConfigError(f"{name} must name a SQLite file, such as sqlite:///var/service.db")
        return url
    if parsed.get_backend_name() == POSTGRESQL and parsed.get_driver_name() == "psycopg":
        return url
    raise ConfigError(
        f"{name} must be sqlite:///<file> or postgresql+psycopg://user:password@host:port/database, "
        f"got a {parsed.drivername!r} URL"
    )


def create_db_engine(url: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> Engine:
    """Create an engine for a SQLite file (its folder is created) or a PostgreSQL database (psycopg 3).

    SQLite gets the pragmas money needs (WAL, foreign keys, busy timeout, ``synchronous``) and
    BEGIN IMMEDIATE for every write transaction. Both compile statements with named parameters.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == POSTGRESQL:
        return create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
    if parsed.get_backend_name() != SQLITE:
        raise ValueError(f"only SQLite and PostgreSQL URLs are supported, got {parsed.get_backend_name()}")
    database = parsed.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        paramstyle="named",
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


def _driver_error_types() -> tuple[type[BaseException], ...]:
    import psycopg

    return (sqlite3.Error, psycopg.Error)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database condition worth retrying: SQLite busy or locked; on PostgreSQL a
    deadlock, a serialization failure, a lock timeout or a lost connection."""
    import psycopg

    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig) or "busy" in str(orig)
    transient = (
        psycopg.errors.DeadlockDetected,
        psycopg.errors.SerializationFailure,
        psycopg.errors.LockNotAvailable,
        psycopg.OperationalError,
    )
    return isinstance(orig, transient)


def busy_error(exc: Exception) -> Exception:
    """The error a caller sees when a whole write transaction failed: a transient condition is UNAVAILABLE."""
    if is_transient(exc):
        return Unavailable("the database is busy; retry", reason="DATABASE_BUSY")
    if isinstance(exc, _driver_error_types()):
        # BEGIN and COMMIT run on the driver connection: show its error as SQLAlchemy's.
        return DBAPIError.instance(None, None, exc, type(exc))
    return exc


# --- statements compiled once, run on the DB-API cursor ------------------------------------------------


Build = ClauseElement | Callable[[Dialect], ClauseElement]


class Statement:
    """A Core statement compiled once per dialect to SQL text with positional parameters.

    ``build`` is the statement, or a function of the dialect that builds it (for the few constructs
    that differ by engine, such as ``upsert``). ``columns`` fixes the columns of an INSERT (the keys
    of the parameters every execution passes). Callers pass a mapping by name; ``Cursor`` sends the
    values positionally (``?`` for sqlite3, ``%s`` for psycopg): sqlite3 binds a 27-column row by
    name in about 10 us and by position in under 5 us here. Values are DB-API values: decimals as
    ``decimal_text``, booleans as ``bool``.
    """

    __slots__ = ("_build", "_columns", "_compiled")

    def __init__(self, build: Build, columns: Sequence[str] | None = None):
        self._build = build
        self._columns = list(columns) if columns is not None else None
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        """(SQL text, parameter names in the order they bind) for ``dialect``; compiled once, then cached."""
        done = self._compiled.get(dialect.name)
        if done is None:
            statement = self._build if isinstance(self._build, ClauseElement) else self._build(dialect)
            compiled = statement.compile(dialect=_positional(dialect), column_keys=self._columns)
            done = (str(compiled), tuple(getattr(compiled, "positiontup", None) or ()))
            self._compiled[dialect.name] = done
        return done

    def sql(self, dialect: Dialect) -> str:
        """The SQL text for ``dialect``."""
        return self.compiled(dialect)[0]


def _positional(dialect: Dialect) -> Dialect:
    # The positional DB-API paramstyle of each driver: ? for sqlite3, %s for psycopg.
    if dialect.name == SQLITE:
        return sqlite_dialect.dialect(paramstyle="qmark")
    return postgresql.dialect(paramstyle="format")  # type: ignore[no-untyped-call]


class Cursor:
    """The DB-API cursor of a connection's current transaction, running ``Statement``s."""

    __slots__ = ("conn", "dialect", "name", "raw")

    def __init__(self, conn: Connection):
        self.conn = conn
        self.dialect = conn.dialect
        self.name = conn.dialect.name
        self.raw: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def execute(self, statement: Statement, params: Mapping[str, Any] | None = None) -> Any:
        """Run ``statement``; return the DB-API cursor (``rowcount``, ``fetchone``...)."""
        sql, keys = statement._compiled.get(self.name) or statement.compiled(self.dialect)
        if keys:
            assert params is not None, "this statement takes parameters"
            self.raw.execute(sql, [params[k] for k in keys])
        else:
            self.raw.execute(sql)
        return self.raw

    def one(self, statement: Statement, params: Mapping[str, Any] | None = None) -> Any:
        """The first row, or None."""
        return self.execute(statement, params).fetchone()

    def all(self, statement: Statement, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every row."""
        return list(self.execute(statement, params).fetchall())

    def many(self, statement: Statement, params: Sequence[Mapping[str, Any]]) -> None:
        """Run ``statement`` once per parameter mapping."""
        if params:
            sql, keys = statement._compiled.get(self.name) or statement.compiled(self.dialect)
            self.raw.executemany(sql, [[p[k] for k in keys] for p in params])


def upsert(
    table: Table, keys: Sequence[str], update: Sequence[str] | None = None
) -> Callable[[Dialect], ClauseElement]:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET the ``update`` columns to the new values, or DO NOTHING.

    SQLite and PostgreSQL spell it alike, but SQLAlchemy builds it per dialect.
    """

    def build(dialect: Dialect) -> ClauseElement:
        insert = (postgresql.insert if dialect.name == POSTGRESQL else sqlite_dialect.insert)(table)
        index = [table.c[k] for k in keys]
        if not update:
            return insert.on_conflict_do_nothing(index_elements=index)
        return insert.on_conflict_do_update(index_elements=index, set_={c: getattr(insert.excluded, c) for c in update})

    return build


# --- transactions on the driver connection ------------------------------------------------------------


def driver_connection(conn: Connection) -> Any:
    """The DB-API connection under a SQLAlchemy connection (sqlite3 or psycopg)."""
    return conn.connection.driver_connection


def kept_connection(engine: Engine) -> Connection:
    """A connection for one writer thread to keep, whose transactions ``driver_transaction`` runs."""
    return engine.connect().execution_options(**{DRIVER_TRANSACTION: True})


def _in_transaction(raw: Any) -> bool:
    if isinstance(raw, sqlite3.Connection):
        return raw.in_transaction
    from psycopg.pq import TransactionStatus

    return bool(raw.info.transaction_status != TransactionStatus.IDLE)


def _begin(raw: Any) -> None:
    if isinstance(raw, sqlite3.Connection):
        raw.execute("BEGIN IMMEDIATE")
    # psycopg begins a transaction by itself before the first statement.


def _commit(raw: Any) -> None:
    if isinstance(raw, sqlite3.Connection):
        raw.execute("COMMIT")
    else:
        raw.commit()


def _rollback(raw: Any) -> None:
    if isinstance(raw, sqlite3.Connection):
        raw.execute("ROLLBACK")
    else:
        raw.rollback()


@contextmanager
def driver_transaction(conn: Connection) -> Iterator[Any]:
    """One write transaction on the driver connection under a kept connection.

    SQLite: ``BEGIN IMMEDIATE`` ... ``COMMIT``; PostgreSQL: the driver's implicit BEGIN ... COMMIT.
    The block gets the driver connection; if it raises, the transaction is rolled back. A block that
    ends the transaction itself (``rollback_driver``) is not committed. SQLAlchemy statements on
    ``conn`` join the transaction; their own bookkeeping is closed afterwards (no BEGIN was sent for
    it, see ``DRIVER_TRANSACTION``, so that sends nothing).
    """
    raw = driver_connection(conn)
    try:
        _begin(raw)
        try:
            yield raw
            if _in_transaction(raw):
                commit_transaction(raw)
        except BaseException:
            if _in_transaction(raw) and not getattr(raw, "closed", False):
                _rollback(raw)
            raise
    finally:
        if conn.in_transaction() and not getattr(raw, "closed", False):
            conn.rollback()


def commit_transaction(raw: Any) -> None:
    """COMMIT the write transaction open on driver connection ``raw`` (the durable point of every write)."""
    _commit(raw)


def rollback_driver(raw: Any) -> None:
    """ROLLBACK the transaction open on driver connection ``raw`` (its block then commits nothing)."""
    _rollback(raw)


def _savepoint(raw: Any, verb: str) -> None:
    raw.execute(verb)


# --- reads ----------------------------------------------------------------------------------------------


class Database:
    """A service's engine with reads on a small thread pool, each in one read transaction (a snapshot
    on SQLite; READ COMMITTED statements on PostgreSQL). Writes go through ``GroupCommit``."""

    def __init__(self, engine: Engine, *, name: str = "db", readers: int = 2):
        self.engine = engine
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix=f"{name}-reader")

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction on the calling thread."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return fn(conn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read_sync, fn)

    def close(self) -> None:
        """Wait for running reads, then close every pooled connection."""
        self._readers.shutdown(wait=True)
        self.engine.dispose()


# --- group commit -----------------------------------------------------------------------------------------


def _stopping() -> Exception:
    return Unavailable("the service is stopping", reason="SHUTTING_DOWN")


BatchResult = tuple[bool, Any]
"""(True, result) or (False, exception) of one write function."""


@dataclass(slots=True)
class _Request:
    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]
    settled: Callable[[], Any] | None
    due: float | None = None
    """Loop time by which a deferred write must be committed; None: as soon as the writer is free."""


class TransactionObserver(Protocol):
    """Telemetry of a writer (``shared.telemetry.DatabaseObserver``): a span per write, the commit time."""

    tracing: bool
    """Whether ``write_started`` is called (spans go somewhere)."""

    def write_started(self) -> Callable[[asyncio.Future[Any]], None]:
        """Called on the caller's task when a write is queued; the result is called when it is answered."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """Wraps BEGIN ... COMMIT of each transaction on the writer thread."""
        ...


class GroupCommit(Generic[C]):
    """Group commit: concurrent writes share one write transaction, each in its own savepoint.

    Every ``write(fn)`` joins a queue. One task drains it: it takes everything queued so far (up to
    ``max_batch``) and runs it on one dedicated writer thread, over one connection kept for that
    thread, in ONE transaction (BEGIN IMMEDIATE on SQLite). Each function runs in its own SAVEPOINT,
    so one that raises rolls back only its own work and gets its own exception while the others
    commit together; a lone function needs no savepoint (its failure rolls back the transaction).
    Callers are answered only after the COMMIT, so an acknowledged write is durable. While a batch
    runs new requests queue up, so batches grow with load and an idle service still commits a lone
    write at once. One COMMIT (and fsync) per batch instead of per write is what lets one writer keep up.

    Each function is called as ``fn(context)`` where ``context = make_context(conn)`` is built once
    per batch, on the writer thread, from the kept SQLAlchemy connection ``conn`` (``Cursor(conn)``
    runs compiled statements on it). SQLAlchemy statements on ``conn`` join the same transaction.
    ``on_commit(context)``, if given, runs on the event loop after each COMMIT, before the callers
    are answered (a service publishes what the batch wrote from its context).

    - ``write(fn, settled=check)``: when the writer takes the request (after every earlier batch has
      committed) ``check()`` runs on the event loop; a result other than None answers the caller
      without touching the database (the committed state already holds what ``fn`` would write).
    - A request whose future is already done (the caller gave up: deadline, cancel) is not run at
      all, unless ``skip_abandoned`` is False.
    - If the transaction as a whole fails (BEGIN or COMMIT: nothing was written), every request gets
      ``error_mapper(exc)`` (by default ``busy_error``) and the failure is logged on ``logger`` (with
      the traceback unless the mapped error is an ``Unavailable``, an expected and retryable
      condition such as a busy database). A broken PostgreSQL connection is replaced for the next batch.
    - ``write(fn, defer=seconds)``: a write nobody waits for before answering a request (what
      recovery can rebuild) does not start a transaction of its own. It waits in the queue for the
      next transaction another write starts, and is committed in it; if none starts within
      ``defer`` seconds, it starts one then. Queue order is kept: a write queued after a deferred
      one is committed with it or after it, never before. ``hurry()`` commits what waits at once
      (somebody is waiting for it: a read that must see it, a cancel of the order it records).
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
        error_mapper: Callable[[Exception], Exception] = busy_error,
        shutdown_error: Callable[[], Exception] = _stopping,
        skip_abandoned: bool = True,
        on_commit: Callable[[C], None] | None = None,
        logger: logging.Logger | None = None,
    ):
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self._make_context = make_context
        self._error_mapper = error_mapper
        self._shutdown_error = shutdown_error
        self._skip_abandoned = skip_abandoned
        self._on_commit = on_commit
        self._log = logger or logging.getLogger("shared.db")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer")
        self._queue: list[_Request] = []
        self._drainer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._urgent = False
        self._conn: Connection | None = None
        self._closed = False
        self.batches = 0
        """Write transactions committed (for tests and diagnostics)."""
        self.settled = 0
        """Requests answered by their ``settled`` check, without the database."""
        self.observer: TransactionObserver | None = None
        """Metrics and spans of the writes (set by the service's bootstrap)."""

    def submit(
        self, fn: Callable[[C], T], *, settled: Callable[[], T | None] | None = None, defer: float | None = None
    ) -> asyncio.Future[T]:
        """Queue ``fn`` (keeping the order of submission); the future holds its result after the COMMIT."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self.observer is not None and self.observer.tracing:
            future.add_done_callback(self.observer.write_started())
        due = None if defer is None else loop.time() + defer
        self._queue.append(_Request(fn, future, settled, due))
        if self._drainer is None:
            if due is None:
                self._start(loop)
            elif self._timer is None:
                self._timer = loop.call_at(due, self._start, loop)
        return future

    async def write(
        self, fn: Callable[[C], T], *, settled: Callable[[], T | None] | None = None, defer: float | None = None
    ) -> T:
        """Run ``fn(context)`` in a write transaction (possibly shared with other writes); raise what it raised."""
        return await self.submit(fn, settled=settled, defer=defer)

    def hurry(self) -> None:
        """Commit the deferred writes now: somebody waits for one of them (a read, a cancel)."""
        if not self._queue:
            return
        self._urgent = True
        self._start(asyncio.get_running_loop())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drainer is None and self._queue:
            self._drainer = loop.create_task(self._drain())

    def _only_deferred(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether everything queued may wait; if so, arm the timer of the earliest and return True."""
        if self._urgent:
            return False
        due = min((r.due for r in self._queue if r.due is not None), default=None)
        if due is None or len(self._queue) == 0 or any(r.due is None for r in self._queue):
            return False
        if due <= loop.time():
            return False
        self._timer = loop.call_at(due, self._start, loop)
        return True

    def _take(self) -> list[_Request]:
        self._urgent = False  # everything queued now goes into this batch (or the next, if it is full)
        batch: list[_Request] = []
        while self._queue and len(batch) < self.max_batch:
            taken = self._queue[: self.max_batch - len(batch)]
            del self._queue[: len(taken)]
            for request in taken:
                if self._skip_abandoned and request.future.done():
                    continue  # a caller that gave up before its turn is not written at all
                if request.settled is not None and self._answered(request):
                    continue
                batch.append(request)
        return batch

    def _answered(self, request: _Request) -> bool:
        assert request.settled is not None
        try:
            result = request.settled()
        except Exception:
            self._log.exception("settled check failed")
            return False
        if result is None:
            return False
        if not request.future.done():
            request.future.set_result(result)
        self.settled += 1
        return True

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        ended = False
        try:
            while self._queue:
                if self._only_deferred(loop):
                    break  # nothing urgent: the deferred writes wait for the next transaction or their time
                batch = self._take()
                if not batch:
                    continue
                try:
                    context, results = await loop.run_in_executor(self._writer, self._run_batch, [r.fn for r in batch])
                except Exception as exc:
                    error = self._error_mapper(exc)
                    self._log.warning("write transaction failed", exc_info=not isinstance(error, Unavailable))
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(error)
                    continue
                if self._on_commit is not None:
                    try:
                        self._on_commit(context)
                    except Exception:
                        self._log.exception("after-commit hook failed")
                for request, (ok, value) in zip(batch, results, strict=True):
                    if request.future.done():
                        continue
                    if ok:
                        request.future.set_result(value)
                    else:
                        # A deadlock or lost connection met by one function is as retryable as a whole batch's.
                        request.future.set_exception(self._error_mapper(value) if is_transient(value) else value)
            ended = True
        finally:
            self._drainer = None
            if not ended:  # cancelled (shutdown); what is still queued and deferred has its timer otherwise
                self._strand()

    def _strand(self) -> None:
        """Nobody will serve what is queued: answer it with ``shutdown_error()``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        stranded, self._queue = self._queue, []
        for request in stranded:
            if not request.future.done():
                request.future.set_exception(self._shutdown_error())

    def _connection(self) -> Connection:
        # One connection kept for the writer thread: no pool checkout or SQLAlchemy transaction per batch.
        if self._conn is None:
            self._conn = kept_connection(self.engine)
        return self._conn

    def _drop_broken_connection(self) -> None:
        conn = self._conn
        if conn is not None and getattr(driver_connection(conn), "closed", False):
            self._conn = None
            conn.invalidate()

    def run_batch(self, fns: list[Callable[[C], Any]]) -> list[BatchResult]:
        """Run ``fns`` in one write transaction on the calling thread, each in its own savepoint.

        Returns (True, result) or (False, exception) per function; raises only if the transaction
        as a whole fails (BEGIN or COMMIT), in which case nothing was written.
        """
        return self._run_batch(fns)[1]

    def _run_batch(self, fns: list[Callable[[C], Any]]) -> tuple[C, list[BatchResult]]:
        try:
            conn = self._connection()
            context = self._make_context(conn)
            results: list[BatchResult] = []
            observer = self.observer
            with observer.transaction() if observer is not None else nullcontext(), driver_transaction(conn) as raw:
                if len(fns) == 1:
                    # Alone in the transaction: no savepoint needed, a failure rolls back everything.
                    try:
                        results.append((True, fns[0](context)))
                    except Exception as exc:
                        rollback_driver(raw)
                        return context, [(False, exc)]
                else:
                    for fn in fns:
                        _savepoint(raw, "SAVEPOINT job")
                        try:
                            result = fn(context)
                        except Exception as exc:
                            _savepoint(raw, "ROLLBACK TO SAVEPOINT job")
                            _savepoint(raw, "RELEASE SAVEPOINT job")
                            results.append((False, exc))
                        else:
                            _savepoint(raw, "RELEASE SAVEPOINT job")
                            results.append((True, result))
        except Exception:
            self._drop_broken_connection()
            raise
        self.batches += 1
        return context, results

    def write_sync(self, fn: Callable[[C], T]) -> T:
        """Run ``fn(context)`` alone in one write transaction on the calling thread (tests, tools)."""
        [(ok, value)] = self.run_batch([fn])
        if not ok:
            raise value
        return cast(T, value)

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


# --- schema helpers for migrations -------------------------------------------------------------------------


def append_only_ddl(dialect: str, table: str, message: str) -> list[str]:
    """DDL that makes ``table`` append-only (UPDATE and DELETE refused with ``message``) on ``dialect``.

    SQLite: a BEFORE trigger per verb that raises. PostgreSQL: the same triggers over one plpgsql
    function (created or replaced here) that raises with the trigger's message.
    """
    statements: list[str] = []
    if dialect == POSTGRESQL:
        statements.append(
            "CREATE OR REPLACE FUNCTION trading_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$"
        )
    for verb in ("UPDATE", "DELETE"):
        name = f"{table}_no_{verb.lower()}"
        if dialect == POSTGRESQL:
            statements.append(
                f"CREATE TRIGGER {name} BEFORE {verb} ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION trading_append_only('{message}')"
            )
        else:
            statements.append(
                f"CREATE TRIGGER {name} BEFORE {verb} ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
    return statements
