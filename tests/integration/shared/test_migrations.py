"""Schema migrations of the three services, on both engines, against the previous release's databases.

``tests/fixtures/previous_release/`` holds the three SQLite files that release (d36d030) made with its
own processes (``make.py`` there): users with API keys and balances, ledger entries, filled, resting
and cancelled orders, fills and journal rows, and no version table.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, Table, inspect, select, text

from services.exchange_gateway.adapters import journal
from services.order_service.adapters import db as order_db
from services.user_service.adapters import tables as user_tables
from services.user_service.bootstrap import start as start_user_service
from shared.db import create_db_engine
from shared.migrations import History, SchemaTooNew, UnknownSchema, upgrade
from tests.integration.user_service.conftest import make_config
from tests.integration.user_service.helpers import ADMIN
from tests.support import PYTHON, ROOT
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

FIXTURES = ROOT / "tests" / "fixtures" / "previous_release"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())

SERVICES: dict[str, tuple[History, MetaData, str]] = {
    "order_service": (order_db.HISTORY, order_db.metadata, "ORDER_DB_URL"),
    "user_service": (user_tables.HISTORY, user_tables.metadata, "USER_DB_URL"),
    "exchange_gateway": (journal.HISTORY, journal.metadata, "GATEWAY_DB_URL"),
}


def current_revision(engine: Engine, history: History) -> str | None:
    """The revision the database is at, read from the service's version table."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": history.version_table})
        return context.get_current_revision()


def _ddl(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'alembic%'")
        return sorted(sql for (sql,) in rows)


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite file, in primary-key order."""
    with sqlite3.connect(path) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}


@pytest.fixture
def engine(new_db_url) -> Iterator[Engine]:
    engine = create_db_engine(new_db_url("m"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_the_first_revision_creates_exactly_the_previous_releases_sqlite_schema(service: str, tmp_path: Path) -> None:
    history = SERVICES[service][0]
    engine = create_db_engine(f"sqlite:///{tmp_path}/fresh.db")
    upgrade(engine, history, "0001")
    engine.dispose()
    assert _ddl(tmp_path / "fresh.db") == _ddl(FIXTURES / f"{service}.db")


@pytest.mark.parametrize("service", SERVICES)
def test_the_newest_revision_is_exactly_what_the_tables_describe(service: str, engine: Engine) -> None:
    history, metadata, _ = SERVICES[service]
    assert upgrade(engine, history) == (None, history.head())
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": history.version_table})
        assert compare_metadata(context, metadata) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_previous_release_sqlite_file_is_adopted_and_upgraded_keeping_every_row(service: str, tmp_path: Path) -> None:
    history = SERVICES[service][0]
    path = tmp_path / f"{service}.db"
    shutil.copy(FIXTURES / f"{service}.db", path)
    before = _rows(path)
    assert sum(len(rows) for rows in before.values()) > 5
    engine = create_db_engine(f"sqlite:///{path}")
    assert upgrade(engine, history) == ("0001", history.head())
    assert upgrade(engine, history) == (history.head(), history.head())  # once is enough
    engine.dispose()
    after = _rows(path)
    for table, rows in before.items():
        assert after[table] == rows, f"{table} changed"


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_at_the_previous_revision_with_rows_is_upgraded_keeping_every_row(
    service: str, engine: Engine
) -> None:
    """The previous release's rows copied into a database at revision 0001 on this engine, then upgraded."""
    history = SERVICES[service][0]
    upgrade(engine, history, "0001")
    source = _rows(FIXTURES / f"{service}.db")
    reflected = MetaData()
    reflected.reflect(engine)
    with engine.begin() as conn:
        for name, rows in source.items():
            if name in reflected.tables and rows:
                table: Table = reflected.tables[name]
                conn.execute(
                    table.insert(), [dict(zip(table.columns.keys(), _values(table, r), strict=True)) for r in rows]
                )
    upgrade(engine, history)
    after = MetaData()
    after.reflect(engine)
    with engine.connect() as conn:
        for name, rows in source.items():
            if name not in reflected.tables:
                continue
            table = after.tables[name]
            stored = sorted((tuple(_plain(v) for v in r) for r in conn.execute(select(table))), key=repr)
            assert stored == sorted((tuple(_plain(v) for v in r) for r in rows), key=repr), f"{name} changed"


def _values(table: Table, row: tuple[Any, ...]) -> list[Any]:
    # SQLite stores booleans as 0/1: give them to PostgreSQL as booleans.
    return [
        bool(v) if c.type.python_type is bool and v is not None else v for c, v in zip(table.columns, row, strict=True)
    ]


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


async def test_the_user_service_started_on_a_previous_release_file_serves_its_users_and_balances(
    tmp_path: Path,
) -> None:
    path = tmp_path / "user_service.db"
    shutil.copy(FIXTURES / "user_service.db", path)
    running = await start_user_service(make_config(path))
    try:
        async with grpc.aio.insecure_channel(running.addr) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            for user_id, expected in EXPECTED["users"].items():
                user = (await stub.GetUser(user_service_pb2.GetUserRequest(user_id=user_id), metadata=ADMIN)).user
                assert user.username == expected["username"]
                balances = await stub.GetBalances(user_service_pb2.GetBalancesRequest(user_id=user_id), metadata=ADMIN)
                assert {b.asset: [b.available, b.locked] for b in balances.balances} == expected["balances"]
                entries = await stub.ListLedgerEntries(
                    user_service_pb2.ListLedgerEntriesRequest(user_id=user_id, page_size=1000), metadata=ADMIN
                )
                assert len(entries.entries) == expected["entries"]
                total = sum(
                    Decimal(e.available_delta) + Decimal(e.locked_delta) for e in entries.entries if e.asset == "USDT"
                )
                assert total == sum(Decimal(x) for x in expected["balances"]["USDT"])
    finally:
        await running.stop(grace=0.5)
    engine = create_db_engine(f"sqlite:///{path}")
    assert current_revision(engine, user_tables.HISTORY) == user_tables.HISTORY.head()
    engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_migrate_brings_the_database_to_the_newest_revision_and_does_only_that(
    service: str, new_db_url, db_engine: str
) -> None:
    history, _, variable = SERVICES[service]
    url = new_db_url(service)
    env = {**os.environ, variable: url}
    first = subprocess.run(
        [PYTHON, "-m", f"services.{service}", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert f"to {history.head()}" in first.stdout
    again = subprocess.run(
        [PYTHON, "-m", f"services.{service}", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "newest schema revision" in again.stdout
    engine = create_db_engine(url)
    assert current_revision(engine, history) == history.head()
    engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_migrated_by_newer_code_is_refused_with_a_clear_message(service: str, engine: Engine) -> None:
    history = SERVICES[service][0]
    upgrade(engine, history)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {history.version_table} SET version_num = '9999'"))
    with pytest.raises(SchemaTooNew, match=r"9999.*newer release"):
        upgrade(engine, history)


def test_migrate_refuses_a_newer_database_with_exit_status_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/u.db"
    engine = create_db_engine(url)
    upgrade(engine, user_tables.HISTORY)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {user_tables.HISTORY.version_table} SET version_num = '9999'"))
    engine.dispose()
    done = subprocess.run(
        [PYTHON, "-m", "services.user_service", "migrate"],
        cwd=ROOT,
        env={**os.environ, "USER_DB_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "which this code does not know" in done.stderr


def test_tables_that_match_no_release_are_refused_rather_than_guessed(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/odd.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (order_id TEXT PRIMARY KEY)"))
    with pytest.raises(UnknownSchema, match="matches no known release"):
        upgrade(engine, order_db.HISTORY)
    assert "alembic_version_order_service" not in inspect(engine).get_table_names()
    engine.dispose()


def test_a_downgrade_is_refused_and_leaves_the_database_at_its_revision(engine: Engine) -> None:
    history = journal.HISTORY
    upgrade(engine, history)
    with pytest.raises(RuntimeError, match="downgrades are not supported"), engine.begin() as conn:
        _downgrade(conn, history)
    assert current_revision(engine, history) == history.head()


def _downgrade(conn: Any, history: History) -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.environment import EnvironmentContext

    script = history.script()
    config = AlembicConfig()

    def steps(revision: Any, _context: Any) -> Any:
        return script._downgrade_revs("0001", revision)

    with EnvironmentContext(config, script, fn=steps, destination_rev="0001") as environment:
        environment.configure(connection=conn, version_table=history.version_table)
        with environment.begin_transaction():
            environment.run_migrations()


def test_every_service_has_its_own_version_table_so_one_database_can_hold_all_three(engine: Engine) -> None:
    tables = set()
    for history, _, _ in SERVICES.values():
        upgrade(engine, history)
        tables.add(history.version_table)
    assert tables <= set(inspect(engine).get_table_names())
    assert len(tables) == 3
