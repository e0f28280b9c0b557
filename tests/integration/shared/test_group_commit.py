"""shared.db.GroupCommit on SQLite and PostgreSQL: shared transactions, per-request savepoints, shutdown."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, insert, text

from shared.db import Cursor, GroupCommit, Statement, create_db_engine
from shared.errors import Unavailable


class Boom(Exception):
    pass


t = Table("t", MetaData(), Column("name", String(40), primary_key=True))
INSERT = Statement(insert(t), ["name"])


def _engine(url: str) -> Engine:
    engine = create_db_engine(url, busy_timeout_ms=200)
    with engine.begin() as conn:
        t.metadata.create_all(conn)
    return engine


@pytest.fixture
def engine(new_db_url) -> Iterator[Engine]:
    engine = _engine(new_db_url("g"))
    yield engine
    engine.dispose()


@pytest.fixture
def group(engine: Engine) -> Iterator[GroupCommit[Connection]]:
    group: GroupCommit[Connection] = GroupCommit(engine, lambda conn: conn, name="test", max_batch=64)
    yield group
    group.close()


def insert(name: str) -> Any:
    def job(conn: Connection) -> str:
        Cursor(conn).execute(INSERT, {"name": name})
        return name

    return job


def insert_then_fail(name: str) -> Any:
    def job(conn: Connection) -> None:
        Cursor(conn).execute(INSERT, {"name": name})
        raise Boom(name)

    return job


async def occupy_writer(group: GroupCommit[Connection]) -> tuple[threading.Event, asyncio.Task[Any]]:
    """Start a write that inserts "first" once the returned gate is set, and let the writer thread take it up."""
    gate = threading.Event()

    def blocked(conn: Connection) -> None:
        assert gate.wait(5)
        insert("first")(conn)

    first = asyncio.create_task(group.write(blocked))
    await asyncio.sleep(0.05)  # the drainer is now running ``blocked`` on the writer thread
    return gate, first


def names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {row[0] for row in conn.exec_driver_sql("SELECT name FROM t")}


async def test_concurrent_writes_share_transactions_and_each_gets_its_own_answer(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    results = await asyncio.gather(*(group.write(insert(f"n{i}")) for i in range(50)))
    assert results == [f"n{i}" for i in range(50)]
    assert names(engine) == {f"n{i}" for i in range(50)}
    assert 1 <= group.batches < 50


async def test_a_failing_job_is_rolled_back_while_the_others_in_its_transaction_commit(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    results = await asyncio.gather(
        group.write(insert("a")), group.write(insert_then_fail("b")), group.write(insert("c")), return_exceptions=True
    )
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], Boom)
    assert group.batches == 1  # all three shared one transaction
    assert names(engine) == {"a", "c"}


def test_run_batch_answers_each_function_and_rolls_back_only_the_failing_savepoint(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    outcomes = group.run_batch([insert("a"), insert_then_fail("b"), insert("c")])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], Boom)
    assert names(engine) == {"a", "c"}


def test_sqlalchemy_statements_in_a_job_join_the_driver_transaction(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    def via_sqlalchemy_then_fail(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": "x"})
        raise Boom("x")

    def via_sqlalchemy(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": "y"})
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())

    outcomes = group.run_batch([via_sqlalchemy_then_fail, via_sqlalchemy])
    assert outcomes[0][0] is False and outcomes[1] == (True, 1)
    # The kept connection is reusable afterwards (no nested BEGIN), alone and in a batch.
    assert group.write_sync(insert("z")) == "z"
    with pytest.raises(Boom):
        group.write_sync(via_sqlalchemy_then_fail)
    assert names(engine) == {"y", "z"}


def test_a_lone_failing_job_rolls_back_and_raises(group: GroupCommit[Connection], engine: Engine) -> None:
    with pytest.raises(Boom):
        group.write_sync(insert_then_fail("solo"))
    assert names(engine) == set()
    assert group.batches == 0  # nothing committed
    assert group.write_sync(insert("after")) == "after"
    assert names(engine) == {"after"}


async def _queue_with_one_abandoned(group: GroupCommit[Connection]) -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
    kept = asyncio.create_task(group.write(insert("kept")))
    abandoned = asyncio.create_task(group.write(insert("abandoned")))
    await asyncio.sleep(0)  # both are queued; the drainer has not taken them yet
    abandoned.cancel()  # the caller gives up: its future is done before its turn
    await kept
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    return kept, abandoned


async def test_a_request_whose_caller_gave_up_is_not_written(group: GroupCommit[Connection], engine: Engine) -> None:
    await _queue_with_one_abandoned(group)
    assert names(engine) == {"kept"}


async def test_without_skip_abandoned_a_request_whose_caller_gave_up_is_still_written(engine: Engine) -> None:
    group: GroupCommit[Connection] = GroupCommit(engine, lambda conn: conn, skip_abandoned=False)
    try:
        await _queue_with_one_abandoned(group)
    finally:
        group.close()
    assert names(engine) == {"kept", "abandoned"}


async def test_requests_stranded_by_shutdown_fail_as_shutting_down(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    gate, first = await occupy_writer(group)
    later = [asyncio.create_task(group.write(insert(f"l{i}"))) for i in range(3)]
    await asyncio.sleep(0)  # queued behind it
    assert group._drainer is not None
    group._drainer.cancel()  # what the loop does at shutdown
    results = await asyncio.gather(*later, return_exceptions=True)
    gate.set()
    first.cancel()
    assert all(isinstance(r, Unavailable) and r.reason == "SHUTTING_DOWN" for r in results), results
    group.close()  # waits for the running batch
    assert names(engine) == {"first"}


async def test_on_sqlite_a_failed_transaction_fails_every_request_with_the_mapped_error_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(f"sqlite:///{tmp_path}/g.db")

    def busy_to_unavailable(exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return Unavailable("busy", reason="DATABASE_BUSY")
        return exc

    logger = logging.getLogger("test.group_commit")
    group: GroupCommit[Connection] = GroupCommit(
        engine, lambda conn: conn, error_mapper=busy_to_unavailable, logger=logger
    )
    blocker = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with caplog.at_level(logging.WARNING, logger="test.group_commit"):
            results = await asyncio.gather(group.write(insert("x")), group.write(insert("y")), return_exceptions=True)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        assert all(isinstance(r, Unavailable) and r.reason == "DATABASE_BUSY" for r in results), results
        assert [r.message for r in caplog.records] == ["write transaction failed"]
        assert not caplog.records[0].exc_info  # an Unavailable is expected: no traceback
        assert names(engine) == set()
        assert await group.write(insert("x")) == "x"  # the lock is gone: the writer recovers
    finally:
        group.close()
        engine.dispose()


async def test_on_sqlite_a_busy_database_is_unavailable_by_default(tmp_path: Path) -> None:
    engine = _engine(f"sqlite:///{tmp_path}/g.db")
    group: GroupCommit[Connection] = GroupCommit(engine, lambda conn: conn)
    blocker = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable) as caught:
            await group.write(insert("x"))
        assert caught.value.reason == "DATABASE_BUSY"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        group.close()
        engine.dispose()


async def test_an_after_commit_hook_sees_each_batch_context_and_a_settled_check_skips_the_database(
    engine: Engine,
) -> None:
    committed: list[list[str]] = []

    def context(conn: Connection) -> list[str]:
        return []

    def add(name: str) -> Any:
        def job(names_written: list[str]) -> str:
            names_written.append(name)
            return name

        return job

    group: GroupCommit[list[str]] = GroupCommit(engine, context, on_commit=committed.append)
    try:
        assert await asyncio.gather(group.write(add("a")), group.write(add("b"))) == ["a", "b"]
        assert committed == [["a", "b"]]
        assert await group.write(add("c"), settled=lambda: "known") == "known"
        assert group.settled == 1 and committed == [["a", "b"]]
    finally:
        group.close()


async def test_on_postgresql_a_lost_writer_connection_fails_one_batch_as_unavailable_then_reconnects(
    postgres_server,
) -> None:
    engine = _engine(postgres_server.create_database("lost"))
    group: GroupCommit[Connection] = GroupCommit(engine, lambda conn: conn)
    try:
        assert await group.write(insert("before")) == "before"
        pid = group.write_sync(lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        with engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(Unavailable) as caught:
            await group.write(insert("lost"))
        assert caught.value.reason == "DATABASE_BUSY"
        assert await group.write(insert("after")) == "after"
    finally:
        group.close()
    assert names(engine) == {"before", "after"}
    engine.dispose()


async def test_a_deferred_write_waits_for_the_next_transaction_and_shares_it(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    deferred = group.submit(insert("later"), defer=60.0)
    await asyncio.sleep(0.05)
    assert not deferred.done() and group.batches == 0  # nothing else wrote: it waits (up to 60 s)
    assert "later" not in names(engine)
    assert await group.write(insert("now")) == "now"
    assert deferred.done() and deferred.result() == "later"
    assert group.batches == 1  # both in one transaction
    assert names(engine) == {"later", "now"}


async def test_a_deferred_write_alone_is_committed_once_its_delay_has_passed(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    assert await group.write(insert("alone"), defer=0.01) == "alone"
    assert group.batches == 1 and names(engine) == {"alone"}


async def test_writes_queued_behind_a_deferred_one_are_committed_in_queue_order(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    order: list[str] = []

    def record(name: str) -> Any:
        def job(conn: Connection) -> str:
            order.append(name)
            Cursor(conn).execute(INSERT, {"name": name})
            return name

        return job

    first = group.submit(record("a"), defer=60.0)
    second = group.submit(record("b"), defer=60.0)
    await group.write(record("c"))
    assert (first.result(), second.result()) == ("a", "b")
    assert order == ["a", "b", "c"]


async def test_a_deferred_write_queued_at_shutdown_fails_as_shutting_down(
    group: GroupCommit[Connection], engine: Engine
) -> None:
    gate, first = await occupy_writer(group)
    deferred = group.submit(insert("later"), defer=60.0)
    assert group._drainer is not None
    group._drainer.cancel()  # what the loop does at shutdown
    with pytest.raises(Unavailable):
        await deferred
    gate.set()
    first.cancel()
    group.close()
    assert names(engine) == {"first"}


async def test_hurry_commits_the_deferred_writes_at_once(group: GroupCommit[Connection], engine: Engine) -> None:
    deferred = group.submit(insert("later"), defer=60.0)
    await asyncio.sleep(0.05)
    assert not deferred.done()
    group.hurry()  # somebody waits for it
    assert await asyncio.wait_for(deferred, 10) == "later"
    assert group.batches == 1 and names(engine) == {"later"}
