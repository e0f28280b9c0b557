"""shared.db.Database on a real SQLite file: writes on the kept writer connection commit or roll back whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from shared.db import Database, create_sqlite_engine


class Boom(Exception):
    pass


@pytest.fixture
def db(tmp_path: Path):
    engine = create_sqlite_engine(f"sqlite:///{tmp_path}/d.db")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (name TEXT PRIMARY KEY)")
    database = Database(engine, name="test")
    yield database
    database.close()


def names(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(text("SELECT name FROM t ORDER BY name"))]


async def test_a_write_commits_and_a_failing_write_leaves_nothing(db: Database) -> None:
    def insert(conn: Connection) -> str:
        conn.execute(text("INSERT INTO t VALUES ('a')"))
        return "done"

    def insert_then_fail(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES ('b')"))
        raise Boom

    assert await db.write(insert) == "done"
    with pytest.raises(Boom):
        await db.write(insert_then_fail)
    # The kept connection is usable after a rollback, and sees its own committed work.
    assert await db.write(names) == ["a"]
    assert await db.read(names) == ["a"]


async def test_writes_see_each_other_in_order(db: Database) -> None:
    for name in ("x", "y", "z"):
        await db.write(lambda conn, n=name: conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n}))
    assert await db.read(names) == ["x", "y", "z"]
