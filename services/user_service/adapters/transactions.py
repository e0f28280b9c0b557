"""The ``Transactions`` port on SQLite: group commit on one writer thread, reads on a small pool.

Writes: every ``write(fn)`` joins a queue. One writer thread takes everything queued so far (up to
``max_batch``) and runs it in ONE ``BEGIN IMMEDIATE`` transaction, each function inside its own
SAVEPOINT: a function that raises rolls back only its own savepoint and gets its exception, the
others commit together. Callers are answered only after the COMMIT, so an acknowledged write is
durable. While a batch runs, new requests queue up, so batches grow with load and an idle
service still answers a lone request at once. One COMMIT (and fsync) per batch instead of per
request is what lets a single SQLite writer keep up with many concurrent reservations.

Because each function re-reads what it needs inside the write transaction, and BEGIN IMMEDIATE
takes SQLite's single write lock before the first read, checks such as "enough available" cannot
race another writer: not in this process and not in another process on the same file.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.exc import OperationalError

from services.user_service.adapters.repository import SqlRepository
from services.user_service.adapters.tables import metadata
from shared.db import READ_ONLY
from shared.errors import DomainError, Unavailable

T = TypeVar("T")

log = logging.getLogger("user_service.db")

Job = Callable[[SqlRepository], Any]
Outcome = tuple[bool, Any]


def create_schema(engine: Engine) -> None:
    """Create the tables if missing (inside BEGIN IMMEDIATE, so concurrent starts do not race)."""
    with engine.begin() as conn:
        metadata.create_all(conn)


def _is_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return (
        isinstance(exc, OperationalError)
        and isinstance(orig, sqlite3.OperationalError)
        and ("locked" in str(orig) or "busy" in str(orig))
    )


def _public(exc: BaseException) -> BaseException:
    """What a caller sees for a failure of the whole batch: domain errors pass, a busy database is UNAVAILABLE."""
    if isinstance(exc, DomainError):
        return exc
    if _is_busy(exc):
        return Unavailable("the database is busy; retry", reason="DATABASE_BUSY")
    return exc


class SqlTransactions:
    """Implements ``service.ports.Transactions`` over a SQLite engine from ``shared.db.create_sqlite_engine``."""

    def __init__(self, engine: Engine, *, max_batch: int = 64, readers: int = 2, name: str = "user-db"):
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix=f"{name}-reader")
        self._queue: list[tuple[Job, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0
        """Number of write transactions committed (for tests and diagnostics)."""

    # --- writes -------------------------------------------------------------------------------

    async def write(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` in a write transaction (possibly shared with other writes); raise what it raised."""
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
                # A caller that gave up before its turn (deadline, cancel) is not written at all.
                batch = [(fn, fut) for fn, fut in batch if not fut.done()]
                if not batch:
                    continue
                try:
                    outcomes = await loop.run_in_executor(self._writer, self.run_batch, [fn for fn, _ in batch])
                except Exception as exc:
                    log.warning("write transaction failed", exc_info=not _is_busy(exc))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(_public(exc))
                    continue
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._drainer = None
            # Only non-empty if this task was cancelled (shutdown): nobody would serve these.
            stranded, self._queue = self._queue, []
            for _, fut in stranded:
                if not fut.done():
                    fut.set_exception(Unavailable("the service is stopping", reason="SHUTTING_DOWN"))

    def _begin(self) -> tuple[Connection, RootTransaction]:
        conn = self.engine.connect()
        try:
            return conn, conn.begin()
        except BaseException:
            conn.close()
            raise

    def _end(self, conn: Connection, transaction: RootTransaction, commit: bool) -> None:
        try:
            if commit:
                transaction.commit()
                self.batches += 1
            elif transaction.is_active:
                transaction.rollback()
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise
        finally:
            conn.close()

    @staticmethod
    def _run_jobs(conn: Connection, fns: list[Job]) -> tuple[list[Outcome], bool]:
        """Run each job in its own savepoint; return the outcomes and whether to commit."""
        repo = SqlRepository(conn)
        if len(fns) == 1:
            # Alone in the transaction: no savepoint needed, a failure rolls back everything.
            try:
                return [(True, fns[0](repo))], True
            except Exception as exc:
                return [(False, exc)], False
        # Plain SAVEPOINT statements on the driver cursor: the same effect as
        # ``begin_nested()`` at a fraction of the cost (see repository.py).
        cursor = repo.cursor
        outcomes: list[Outcome] = []
        for fn in fns:
            cursor.execute("SAVEPOINT job")
            try:
                result = fn(repo)
            except Exception as exc:
                cursor.execute("ROLLBACK TO job")
                cursor.execute("RELEASE job")
                outcomes.append((False, exc))
            else:
                cursor.execute("RELEASE job")
                outcomes.append((True, result))
        return outcomes, True

    def run_batch(self, fns: list[Job]) -> list[Outcome]:
        """Run ``fns`` in one write transaction on the calling thread, each in its own savepoint.

        Returns (True, result) or (False, exception) per function; raises only if the
        transaction as a whole fails (BEGIN or COMMIT), in which case nothing was written.
        """
        conn, transaction = self._begin()
        try:
            outcomes, commit = self._run_jobs(conn, fns)
        except BaseException:
            self._end(conn, transaction, False)
            raise
        self._end(conn, transaction, commit)
        return outcomes

    def write_sync(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` alone in a write transaction on the calling thread (tests, tools)."""
        [(ok, value)] = self.run_batch([fn])
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    # --- reads --------------------------------------------------------------------------------

    def read_sync(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` in a read transaction (a consistent snapshot) on the calling thread."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return fn(SqlRepository(conn))

    async def read(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` in a read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read_sync, fn)

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish queued writes, then close threads and connections."""
        if self._drainer is not None:
            await asyncio.shield(self._drainer)
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
