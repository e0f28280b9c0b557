"""Schema migrations with Alembic: one history per service, run at start and by ``migrate``.

Each service keeps its revisions in ``services/<name>/adapters/migrations/versions/`` and its own
version table (``alembic_version_<name>``), so the three histories never meet even in one database.
``upgrade`` brings a database to the newest revision the code knows, in one transaction that also
serialises concurrent starts (SQLite's write lock; a PostgreSQL advisory lock):

- a database with no version table and none of the service's tables is built from the first revision;
- a database with no version table but the tables of a known release (a file made before this
  service had migrations) is adopted: stamped with the newest revision whose tables are all there,
  then upgraded; tables that match no release are refused rather than guessed at;
- a database at a revision this code does not know (made by newer code) is refused with
  ``SchemaTooNew``: the code never writes to a schema it does not understand.

Downgrades are not offered: the revisions refuse them (restore the backup taken before upgrading).
On PostgreSQL the database must use the C collation: identifiers are compared and ordered bytewise
on both engines (keyset pagination by id relies on it).
"""

from __future__ import annotations

import logging
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from shared.config import ConfigError, sqlite_url
from shared.db import POSTGRESQL, check_db_url, create_db_engine

log = logging.getLogger("shared.migrations")

BYTEWISE_COLLATIONS = ("C", "POSIX", "C.UTF-8", "C.utf8")


class SchemaTooNew(ConfigError):
    """The database was migrated by newer code than this: refused."""


class UnknownSchema(ConfigError):
    """The database holds tables of the service but no version table, and matches no known release."""


@dataclass(frozen=True)
class History:
    """One service's migration history.

    ``releases`` lists, newest first, (revision, tables that revision's schema has) for adopting a
    database made before the service had a version table.
    """

    service: str
    directory: Path
    releases: Sequence[tuple[str, frozenset[str]]]

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"

    def script(self) -> ScriptDirectory:
        """The revisions on disk."""
        return ScriptDirectory(str(self.directory), version_locations=[str(self.directory / "versions")])

    def head(self) -> str:
        """The newest revision this code knows."""
        head = self.script().get_current_head()
        assert head is not None, f"{self.directory} has no revisions"
        return head


def _context(conn: Connection, history: History, **opts: Any) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": history.version_table, **opts})


def _lock(conn: Connection, history: History) -> None:
    """Serialise concurrent migrations of one database (SQLite: BEGIN IMMEDIATE already did)."""
    if conn.dialect.name == POSTGRESQL:
        key = zlib.crc32(history.version_table.encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _check_collation(conn: Connection, history: History) -> None:
    if conn.dialect.name != POSTGRESQL:
        return
    collation = conn.execute(text("SELECT datcollate FROM pg_database WHERE datname = current_database()")).scalar()
    if collation not in BYTEWISE_COLLATIONS:
        raise ConfigError(
            f"{history.service}: the PostgreSQL database uses collation {collation!r}; the services compare "
            "identifiers bytewise: create the database with LOCALE 'C' "
            "(CREATE DATABASE name TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8')"
        )


def _adopt(conn: Connection, history: History, context: MigrationContext) -> None:
    """Stamp a database made before the version table existed with the release its tables match."""
    present = set(inspect(conn).get_table_names())
    known = set().union(*(tables for _, tables in history.releases))
    if not present & known:
        return  # an empty database: built from the first revision
    for revision, tables in history.releases:
        if tables <= present:
            log.warning(
                "adopting a database without a version table",
                extra={"service": history.service, "revision": revision},
            )
            context.stamp(history.script(), revision)
            return
    raise UnknownSchema(
        f"{history.service}: the database has some of the service's tables ({', '.join(sorted(present & known))}) "
        "but no version table, and matches no known release; refusing to guess its schema"
    )


def upgrade(engine: Engine, history: History, target: str | None = None) -> tuple[str | None, str]:
    """Migrate the database to the newest revision (or ``target``); return (revision before, revision after).

    Raises ``SchemaTooNew`` for a database at a revision this code does not know, ``UnknownSchema``
    for unversioned tables that match no release, ConfigError for a PostgreSQL database whose
    collation is not bytewise.
    """
    script = history.script()
    newest = history.head()
    head = target or newest
    with engine.begin() as conn:
        _lock(conn, history)
        _check_collation(conn, history)
        context = _context(conn, history)
        before = context.get_current_revision()
        if before is None:
            _adopt(conn, history, context)
            before = context.get_current_revision()
        if before is not None and before != head:
            try:
                script.get_revision(before)
            except Exception:
                raise SchemaTooNew(
                    f"{history.service}: the database is at schema revision {before!r}, which this code does not "
                    f"know (its newest is {newest!r}): it was migrated by a newer release. Run that release, or "
                    "restore the backup taken before its upgrade."
                ) from None
        if before != head:
            _run(conn, history, script, head)
    if before != head:
        log.info("database migrated", extra={"service": history.service, "from": before, "to": head})
    return before, head


def _run(conn: Connection, history: History, script: ScriptDirectory, target: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(history.directory))

    def steps(revision: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs(target, revision)

    with EnvironmentContext(config, script, fn=steps, destination_rev=target) as environment:
        environment.configure(connection=conn, version_table=history.version_table)
        with environment.begin_transaction():
            environment.run_migrations()


def refuse_downgrade(service: str) -> None:
    """What every revision's ``downgrade`` does: refuse (restore the backup taken before the upgrade)."""
    raise RuntimeError(
        f"{service}: schema downgrades are not supported; restore the database backup taken before the upgrade"
    )


def migrate_command(service: str, variable: str, filename: str, history: History) -> int:
    """``python -m services.<name> migrate``: migrate the database that ``variable`` names (default: the
    SQLite file ``var/<filename>``), print what was done, and return the exit status."""
    try:
        url = check_db_url(variable, sqlite_url(os.environ, variable, filename))
        engine = create_db_engine(url)
        try:
            before, after = upgrade(engine, history)
        finally:
            engine.dispose()
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        return 2
    if before == after:
        print(f"{service}: the database is at the newest schema revision {after}")
    else:
        print(f"{service}: migrated the database from revision {before or '(empty)'} to {after}")
    return 0
