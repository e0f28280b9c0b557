"""The ``Transactions`` port on SQLite: group commit on one writer thread, reads on a small pool.

Writes (``shared.db.GroupCommit``): every ``write(fn)`` joins a queue. One writer thread takes
everything queued so far (up to ``max_batch``) and runs it in ONE ``BEGIN IMMEDIATE``
transaction, each function inside its own SAVEPOINT: a function that raises rolls back only its
own savepoint and gets its exception, the others commit together. Callers are answered only after
the COMMIT, so an acknowledged write is durable. While a batch runs, new requests queue up, so
batches grow with load and an idle service still answers a lone request at once. One COMMIT (and
fsync) per batch instead of per request is what lets a single SQLite writer keep up with many
concurrent reservations.

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

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from services.user_service.adapters.repository import SqlRepository
from services.user_service.adapters.tables import metadata
from shared.db import READ_ONLY, GroupCommit, Outcome
from shared.errors import DomainError, Unavailable

T = TypeVar("T")

log = logging.getLogger("user_service.db")

Job = Callable[[SqlRepository], Any]


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


def _public(exc: Exception) -> Exception:
    """What a caller sees for a failure of the whole batch: domain errors pass, a busy database is UNAVAILABLE."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, sqlite3.Error):
        # BEGIN and COMMIT run on the driver connection: wrap its error as SQLAlchemy's, as it always was.
        exc = DBAPIError.instance(None, None, exc, sqlite3.Error)
    if _is_busy(exc):
        return Unavailable("the database is busy; retry", reason="DATABASE_BUSY")
    return exc


class SqlTransactions:
    """Implements ``service.ports.Transactions`` over a SQLite engine from ``shared.db.create_sqlite_engine``."""

    def __init__(self, engine: Engine, *, max_batch: int = 64, readers: int = 2, name: str = "user-db"):
        self.engine = engine
        self.group: GroupCommit[SqlRepository] = GroupCommit(
            engine, SqlRepository, name=name, max_batch=max_batch, error_mapper=_public, logger=log
        )
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix=f"{name}-reader")

    @property
    def batches(self) -> int:
        """Number of write transactions committed (for tests and diagnostics)."""
        return self.group.batches

    # --- writes -------------------------------------------------------------------------------

    async def write(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` in a write transaction (possibly shared with other writes); raise what it raised."""
        return await self.group.write(fn)

    def run_batch(self, fns: list[Job]) -> list[Outcome]:
        """Run ``fns`` in one write transaction on the calling thread, each in its own savepoint.

        Returns (True, result) or (False, exception) per function; raises only if the
        transaction as a whole fails (BEGIN or COMMIT), in which case nothing was written.
        """
        return self.group.run_batch(fns)

    def write_sync(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` alone in a write transaction on the calling thread (tests, tools)."""
        return self.group.write_sync(fn)

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
        await self.group.drain()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self.group.close()
        self._readers.shutdown(wait=True)
        self.engine.dispose()
