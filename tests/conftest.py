"""Both database engines for any test: SQLite files in tmp dirs, and one real PostgreSQL 15 per session.

``postgres_server`` (session) runs initdb in a temporary directory and starts PostgreSQL on a free
port of 127.0.0.1 (as the ``postgres`` system user when the tests run as root: the server refuses
root), with the C collation the services require; it is stopped and removed at the end.

A test that runs on both engines takes ``db_engine`` (parametrized: ``[sqlite]`` and ``[postgresql]``
in its id) and asks ``new_db_url(name)`` for a fresh, empty database on that engine. Tests that take
neither run on SQLite as before; engine-specific tests say so in their names.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port

PG_BIN = Path(os.environ.get("TRADING_PG_BIN", "/usr/lib/postgresql/15/bin"))
ENGINES = ("sqlite", "postgresql")


@dataclass
class PostgresServer:
    """A PostgreSQL server of this test session; ``create_database`` makes an empty database on it."""

    port: int
    root: Path
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction, as the superuser, on the ``postgres`` database."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (C collation); its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8'")
        return self.url(name)


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb); .ci/run installs postgresql-15")
        pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb): apt-get install postgresql-15")
    root = Path(tempfile.mkdtemp(prefix="trading-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    # Durability across a machine crash is not under test (a killed service is: the server stays up).
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    subprocess.run(
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    server = PostgresServer(port, root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.execute("SELECT 1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=ENGINES)
def db_engine(request: pytest.FixtureRequest) -> str:
    """The engine a both-engine test runs on this time: ``sqlite`` or ``postgresql``."""
    return str(request.param)


@pytest.fixture
def new_db_url(db_engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """A function giving a fresh empty database on ``db_engine`` for each name it is called with."""
    made: dict[str, str] = {}

    def make(name: str) -> str:
        if name not in made:
            if db_engine == "sqlite":
                made[name] = f"sqlite:///{tmp_path / name}.db"
            else:
                server: PostgresServer = request.getfixturevalue("postgres_server")
                made[name] = server.create_database(name)
        return made[name]

    return make
