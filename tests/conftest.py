"""Both database engines for any test: SQLite files in tmp dirs, and one real PostgreSQL 15 per session.

``postgres_server`` (session) runs initdb in a temporary directory and starts PostgreSQL on a Unix
socket in it, no TCP port (as the ``postgres`` system user when the tests run as root: the server
refuses root), with the C collation the services require; it is stopped and removed at the end.

A test that runs on both engines takes ``db_engine`` (parametrized: ``[sqlite]`` and ``[postgresql]``
in its id) and asks ``new_db_url(name)`` for a fresh, empty database on that engine. Tests that take
neither run on SQLite; engine-specific tests say so in their names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.postgres import TemporaryPostgres, installed

ENGINES = ("sqlite", "postgresql")

PostgresServer = TemporaryPostgres
"""What ``postgres_server`` gives: ``create_database(prefix)`` returns the URL of a new empty database."""


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    if not installed():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15 is not installed; .ci/run installs postgresql-15")
        pytest.skip("PostgreSQL 15 is not installed: apt-get install postgresql-15")
    # Durability across a machine crash is not under test (a killed service is: the server stays up).
    server = TemporaryPostgres(durable=False)
    try:
        yield server.start()
    finally:
        server.stop()


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
