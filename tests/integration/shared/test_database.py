"""shared.db on both engines: reads in a transaction, exact decimals, compiled statements, upserts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, bindparam, insert, select

from shared.config import ConfigError
from shared.db import (
    Cursor,
    Database,
    ExactDecimal,
    GroupCommit,
    Statement,
    check_db_url,
    create_db_engine,
    decimal_text,
    upsert,
)

metadata = MetaData()
accounts = Table(
    "accounts",
    metadata,
    Column("name", String(20), primary_key=True),
    Column("balance", ExactDecimal(), nullable=False),
    Column("raw", ExactDecimal(None, 64)),
    Column("hits", Integer, nullable=False),
)
UPSERT = Statement(upsert(accounts, ["name"], ["balance", "hits"]), ["name", "balance", "raw", "hits"])
INSERT_ONCE = Statement(upsert(accounts, ["name"]), ["name", "balance", "raw", "hits"])
GET = Statement(
    select(accounts.c.balance, accounts.c.hits).where(accounts.c.name == bindparam("name")).with_for_update()
)


@pytest.fixture
def db(new_db_url):
    engine = create_db_engine(new_db_url("d"))
    with engine.begin() as conn:
        metadata.create_all(conn)
    database = Database(engine, name="test")
    yield database
    database.close()


def test_big_and_small_decimals_round_trip_exactly_through_core_and_the_cursor(db: Database) -> None:
    big = Decimal("1234567890123456.78000000")
    group: GroupCommit[Connection] = GroupCommit(db.engine, lambda conn: conn)
    try:
        group.write_sync(
            lambda conn: conn.execute(
                insert(accounts), {"name": "a", "balance": big, "raw": Decimal("0.000000000123"), "hits": 1}
            )
        )
        group.write_sync(
            lambda conn: Cursor(conn).execute(
                INSERT_ONCE, {"name": "b", "balance": decimal_text(Decimal("0.1")), "raw": None, "hits": 1}
            )
        )
    finally:
        group.close()
    rows = db.read_sync(lambda conn: conn.execute(select(accounts).order_by(accounts.c.name)).all())
    assert rows[0].balance == big and str(rows[0].balance) == "1234567890123456.78000000"
    assert rows[0].raw == Decimal("0.000000000123")
    assert rows[1].balance == Decimal("0.10000000")


def test_upsert_updates_only_the_named_columns_and_insert_once_keeps_the_first(db: Database) -> None:
    group: GroupCommit[Cursor] = GroupCommit(db.engine, Cursor)
    try:
        for balance, hits in (("1", 1), ("2", 2)):
            group.write_sync(
                lambda c, b=balance, h=hits: c.execute(
                    UPSERT, {"name": "a", "balance": decimal_text(Decimal(b)), "raw": "7", "hits": h}
                )
            )
        inserted = group.write_sync(
            lambda c: c.execute(INSERT_ONCE, {"name": "a", "balance": "9.00000000", "raw": None, "hits": 9}).rowcount
        )
        row = group.write_sync(lambda c: c.one(GET, {"name": "a"}))
    finally:
        group.close()
    assert inserted == 0
    assert (Decimal(row[0]), row[1]) == (Decimal(2), 2)


def test_decimal_text_is_canonical_and_refuses_to_round() -> None:
    assert decimal_text(Decimal("1.5")) == "1.50000000"
    assert decimal_text(Decimal("1E+3")) == "1000.00000000"
    assert decimal_text(Decimal("0.000000001"), None) == "0.000000001"
    with pytest.raises(ValueError):
        decimal_text(Decimal("0.000000001"))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "mysql://u@h/db",
        "postgresql+psycopg2://u@h/db",
        "postgresql+asyncpg://u@h/db",
        "not a url",
    ],
)
def test_database_urls_the_services_cannot_run_on_are_a_config_error_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="ORDER_DB_URL"):
        check_db_url("ORDER_DB_URL", url)


def test_sqlite_files_and_psycopg_urls_are_accepted() -> None:
    for url in ("sqlite:///var/x.db", "postgresql+psycopg://u:p@h:5432/db"):
        assert check_db_url("USER_DB_URL", url) == url
