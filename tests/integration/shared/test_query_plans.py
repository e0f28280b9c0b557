"""The statements the services run for each order, fill and cancel find their rows through an index.

Their cost must not grow with the number of orders the databases hold (open ones included): a
statement that scans a table does. EXPLAIN QUERY PLAN on a SQLite database made by each service's own
migrations shows how each compiled statement runs; only the listings that return a whole table
(admin reads, never per event) may scan it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.exchange_gateway.adapters import journal
from services.order_service.adapters import db as order_db
from services.user_service.adapters import repository as user_repository
from services.user_service.adapters import tables as user_tables
from shared.db import Statement, create_db_engine
from shared.migrations import History, upgrade

# Where each service keeps its compiled statements (``shared.db.Statement``), with its migration history.
SERVICES: dict[str, tuple[History, Any]] = {
    "order_service": (order_db.HISTORY, order_db),
    "user_service": (user_tables.HISTORY, user_repository._Sql),
    "exchange_gateway": (journal.HISTORY, journal),
}

WHOLE_TABLE_READS = {
    "order_service": set(),
    "user_service": set(),
    # ListForeignOrders reads foreign orders (orders placed by hand, a few) in the order they were found.
    "exchange_gateway": {"_FOREIGN_FIRST_PAGE", "_FOREIGN_NEXT_PAGE", "_SELECT_FOREIGN_ALL"},
}


def scans(tmp_path: Path, service: str) -> dict[str, list[str]]:
    """The steps of each statement's query plan that scan a table, by statement name."""
    history, namespace = SERVICES[service]
    statements = {name: value for name, value in vars(namespace).items() if isinstance(value, Statement)}
    assert statements
    engine = create_db_engine(f"sqlite:///{tmp_path}/{service}.db")
    try:
        upgrade(engine, history)
        found: dict[str, list[str]] = {}
        with engine.connect() as conn:
            sqlite = conn.connection.driver_connection
            assert sqlite is not None
            for name, statement in statements.items():
                sql, parameters = statement.compiled(engine.dialect)
                plan = sqlite.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * len(parameters)).fetchall()
                steps = [str(row[-1]) for row in plan if str(row[-1]).startswith("SCAN ")]
                if steps:
                    found[name] = steps
        return found
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_only_whole_table_listings_scan_a_table(service: str, tmp_path: Path) -> None:
    assert set(scans(tmp_path, service)) == WHOLE_TABLE_READS[service]
