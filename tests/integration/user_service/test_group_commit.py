"""Group commit: many writes share one transaction, yet each succeeds or fails on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from services.user_service.adapters.repository import SqlRepository
from services.user_service.adapters.transactions import SqlTransactions, migrate
from services.user_service.domain.commands import Deposit
from services.user_service.domain.model import User, UserStatus
from services.user_service.service import accounts, ledger
from shared.db import create_db_engine
from shared.errors import FailedPrecondition, Unavailable

U = "usr_01J9Z3ABCDEFGHJKMNPQRSTVW0"
NOW = 1_700_000_000_000


def _deposit(asset: str, amount: str, key: str):  # type: ignore[no-untyped-def]
    command = Deposit.parse(U, asset, amount, key)
    return lambda repo: ledger.deposit(repo, command, NOW)


@pytest.fixture
def tx(tmp_path: Path) -> Iterator[SqlTransactions]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/u.db", busy_timeout_ms=200)
    migrate(engine)
    transactions = SqlTransactions(engine, max_batch=16)
    user = User(U, "ann", "ann@example.com", UserStatus.ACTIVE, NOW, NOW)
    transactions.write_sync(lambda repo: accounts.create_user(repo, user))
    yield transactions
    transactions.close()


def _available(tx: SqlTransactions, asset: str) -> Decimal | None:
    balance = tx.read_sync(lambda repo: repo.get_balance(U, asset))
    return None if balance is None else balance.available


def test_a_job_that_fails_after_writing_rolls_back_only_its_own_savepoint(tx: SqlTransactions) -> None:
    def writes_then_fails(repo: SqlRepository) -> None:
        ledger.deposit(repo, Deposit.parse(U, "ETH", "5", "doomed"), NOW)
        raise FailedPrecondition("changed my mind")

    outcomes = tx.run_batch([_deposit("BTC", "1", "a"), writes_then_fails, _deposit("USDT", "2", "c")])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], FailedPrecondition)
    assert _available(tx, "BTC") == 1
    assert _available(tx, "USDT") == 2
    assert _available(tx, "ETH") is None, "the failed job's deposit was rolled back"
    assert tx.read_sync(lambda repo: repo.get_idempotency("funds", "doomed")) is None


async def test_concurrent_writes_are_committed_together_and_each_gets_its_own_answer(tx: SqlTransactions) -> None:
    before = tx.batches
    jobs = [_deposit("BTC", "0.1", f"d{i}") for i in range(40)]
    jobs += [_deposit("BTC", "0.1", "d0")] * 5  # replays of an earlier key in the same burst
    results = await asyncio.gather(*(tx.write(job) for job in jobs))
    assert len(results) == 45
    assert _available(tx, "BTC") == Decimal("4.0")
    assert tx.batches - before < 45


async def test_a_locked_database_fails_the_whole_batch_as_unavailable_and_writes_nothing(
    tx: SqlTransactions, tmp_path: Path
) -> None:
    blocker = sqlite3.connect(tmp_path / "u.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        results = await asyncio.gather(
            tx.write(_deposit("BTC", "1", "x")), tx.write(_deposit("BTC", "1", "y")), return_exceptions=True
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(r, Unavailable) and r.reason == "DATABASE_BUSY" for r in results), results
    assert _available(tx, "BTC") is None
    # Once the lock is gone the same requests go through.
    await tx.write(_deposit("BTC", "1", "x"))
    assert _available(tx, "BTC") == 1
