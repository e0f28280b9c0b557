"""A throw-away PostgreSQL 15 server for the benchmark (``--db postgres``) and the tests.

``TemporaryPostgres`` runs initdb in a directory of its own (the C collation the services require,
trust authentication), starts the server listening on a Unix socket in that directory only (no TCP
port, so none to find free or to collide with) and stops it with the data when asked. PostgreSQL
refuses to run as root: as root it runs as the ``postgres`` system user (runuser).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("TRADING_PG_BIN", "/usr/lib/postgresql/15/bin"))


def installed() -> bool:
    """Whether the PostgreSQL 15 server binaries are there (Debian's postgresql-15)."""
    return (PG_BIN / "initdb").exists()


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


SOCKET_PORT = 5432
"""Only names the socket file (``.s.PGSQL.5432`` in the server's own directory): no TCP port is opened."""


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory; ``create_database`` makes an empty database on it.

    ``durable=False`` turns fsync and synchronous commit off (tests: a killed service is under test,
    not a machine crash); the benchmark keeps PostgreSQL's durable defaults.
    """

    def __init__(self, *, durable: bool = True, max_connections: int = 300):
        self.root = Path(tempfile.mkdtemp(prefix="trading-pg-"))
        self.durable = durable
        self.max_connections = max_connections
        self._names = itertools.count(1)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}&port={SOCKET_PORT}"

    def start(self) -> TemporaryPostgres:
        """initdb, start the server and wait until it answers."""
        data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
        options = f"-p {SOCKET_PORT} -k {self.root} -c listen_addresses='' -c max_connections={self.max_connections}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start"]
        subprocess.run(_as_postgres(ctl), check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.execute("SELECT 1")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction, as the superuser, on the ``postgres`` database."""
        import psycopg

        dsn = f"host={self.root} port={SOCKET_PORT} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (C collation); its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8'")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its directory."""
        data = self.root / "data"
        if data.exists():
            stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_postgres(stop), check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
