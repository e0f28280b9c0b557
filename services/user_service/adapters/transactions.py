"""The ``Transactions`` port on ``shared.db``: group commit on one writer thread, reads on a small pool.

Writes (``shared.db.GroupCommit``): every ``write(fn)`` joins a queue. One writer thread takes
everything queued so far (up to ``max_batch``) and runs it in ONE write transaction (BEGIN IMMEDIATE
on SQLite), each function inside its own SAVEPOINT: a function that raises rolls back only its own
savepoint and gets its exception, the others commit together. Callers are answered only after the
COMMIT, so an acknowledged write is durable. While a batch runs, new requests queue up, so batches
grow with load and an idle service still answers a lone request at once. One COMMIT (and fsync) per
batch instead of per request is what lets a single writer keep up with many concurrent reservations.

Each function re-reads what it needs inside the write transaction, so checks such as "enough
available" cannot race another writer: on SQLite BEGIN IMMEDIATE takes the single write lock before
the first read (in this process and in any other on the same file); on PostgreSQL the repository
reads with row locks (``SqlRepository(writing=True)``). A busy or locked database, a deadlock or a
lost connection fails the batch as UNAVAILABLE (retry); domain errors pass unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from services.user_service.adapters.repository import SqlRepository
from services.user_service.adapters.tables import HISTORY
from shared.db import BatchResult, Database, GroupCommit
from shared.migrations import upgrade

T = TypeVar("T")

log = logging.getLogger("user_service.db")

Job = Callable[[SqlRepository], Any]


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema revision (``shared.migrations.upgrade``)."""
    upgrade(engine, HISTORY)


class SqlTransactions:
    """Implements ``service.ports.Transactions`` over an engine from ``shared.db.create_db_engine``."""

    def __init__(self, engine: Engine, *, max_batch: int = 64, readers: int = 2, name: str = "user-db"):
        self.engine = engine
        self.group: GroupCommit[SqlRepository] = GroupCommit(
            engine, lambda conn: SqlRepository(conn, writing=True), name=name, max_batch=max_batch, logger=log
        )
        self.db = Database(engine, name=name, readers=readers)

    @property
    def batches(self) -> int:
        """Number of write transactions committed (for tests and diagnostics)."""
        return self.group.batches

    # --- writes -------------------------------------------------------------------------------

    async def write(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` in a write transaction (possibly shared with other writes); raise what it raised."""
        return await self.group.write(fn)

    def run_batch(self, fns: list[Job]) -> list[BatchResult]:
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
        """Run ``fn(repo)`` in a read transaction on the calling thread."""
        return self.db.read_sync(lambda conn: fn(SqlRepository(conn)))

    async def read(self, fn: Callable[[SqlRepository], T]) -> T:
        """Run ``fn(repo)`` in a read transaction on a reader thread."""
        return await self.db.read(lambda conn: fn(SqlRepository(conn)))

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish queued writes, then close threads and connections."""
        await self.group.drain()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Wait for running transactions, then close every connection."""
        self.group.close()
        self.db.close()
