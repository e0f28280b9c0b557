"""Schema of the user service (SQLite or PostgreSQL), made by the Alembic history in ``migrations/``.

Money columns are ``ExactDecimal`` (canonical text with 8 places, TEXT affinity on SQLite): exact,
but never SUM or ORDER BY them in SQL. Defences in the schema itself, besides the code's checks:
- ledger entries, house entries, key grants and audit events are append-only: triggers (made by
  the migrations, see ``shared.db.append_only_ddl``) refuse UPDATE and DELETE;
- users' balances and reservation figures cannot be stored negative (CHECK on the text's sign);
  house balances are signed (``exchange_fees`` is a cost and goes negative);
- usernames, e-mails and idempotency keys are UNIQUE, so a racing duplicate cannot slip in.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shared.db import ExactDecimal
from shared.migrations import History

metadata = MetaData()


def _not_negative(*columns: str) -> list[CheckConstraint]:
    return [CheckConstraint(f"{c} NOT LIKE '-%'", name=f"ck_{c}_not_negative") for c in columns]


users = Table(
    "users",
    metadata,
    Column("user_id", String(30), primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("create_ms", BigInteger, nullable=False),
    Column("update_ms", BigInteger, nullable=False),
    Column("last_login_ms", BigInteger),
    Index("ix_users_status", "status", "user_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(30), primary_key=True),
    Column("user_id", String(30), ForeignKey("users.user_id"), nullable=False),
    Column("label", String(64), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("create_ms", BigInteger, nullable=False),
    Column("revoke_ms", BigInteger),
    Column("last_used_ms", BigInteger),
    Index("ix_api_keys_user", "user_id", "key_id"),
)

balances = Table(
    "balances",
    metadata,
    Column("user_id", String(30), ForeignKey("users.user_id"), nullable=False),
    Column("asset", String(20), nullable=False),
    Column("available", ExactDecimal, nullable=False),
    Column("locked", ExactDecimal, nullable=False),
    Column("update_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "asset"),
    *_not_negative("available", "locked"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    # AUTOINCREMENT: ids are never reused, so they increase in the order entries were written.
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(30), ForeignKey("users.user_id"), nullable=False),
    Column("asset", String(20), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("available_delta", ExactDecimal, nullable=False),
    Column("locked_delta", ExactDecimal, nullable=False),
    Column("available_after", ExactDecimal, nullable=False),
    Column("locked_after", ExactDecimal, nullable=False),
    Column("reference", String(128), nullable=False),
    Column("order_id", String(64)),
    Column("create_ms", BigInteger, nullable=False),
    Index("ix_ledger_user", "user_id", "entry_id"),
    Index("ix_ledger_user_asset", "user_id", "asset", "entry_id"),
    sqlite_autoincrement=True,
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("user_id", String(30), ForeignKey("users.user_id"), nullable=False),
    Column("asset", String(20), nullable=False),
    Column("reserved", ExactDecimal, nullable=False),
    Column("consumed", ExactDecimal, nullable=False),
    Column("released", ExactDecimal, nullable=False),
    Column("create_ms", BigInteger, nullable=False),
    Column("update_ms", BigInteger, nullable=False),
    Index("ix_reservations_user", "user_id", "asset"),
    *_not_negative("reserved", "consumed", "released"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(16), nullable=False),
    Column("key", String(128), nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("result", Text, nullable=False),
    Column("create_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("scope", "key"),
)

house_balances = Table(
    "house_balances",
    metadata,
    Column("account", String(32), nullable=False),
    Column("asset", String(20), nullable=False),
    Column("balance", ExactDecimal, nullable=False),
    Column("update_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "asset"),
)

house_entries = Table(
    "house_entries",
    metadata,
    # AUTOINCREMENT: ids are never reused, so they increase in the order entries were written.
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(32), nullable=False),
    Column("asset", String(20), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("balance_after", ExactDecimal, nullable=False),
    Column("reference", String(128), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("create_ms", BigInteger, nullable=False),
    Index("ix_house_entries_account", "account", "asset", "entry_id"),
    Index("ix_house_entries_asset", "asset", "entry_id"),
    sqlite_autoincrement=True,
)

api_key_grants = Table(
    "api_key_grants",
    metadata,
    # A key's scopes and expiry, fixed at creation. A key without a row (made before scopes
    # existed) is a trade key that never expires.
    Column("key_id", String(30), ForeignKey("api_keys.key_id"), primary_key=True),
    Column("scopes", String(64), nullable=False),
    Column("expire_ms", BigInteger),
)

audit_events = Table(
    "audit_events",
    metadata,
    # AUTOINCREMENT: ids are never reused, so they increase in the order events were recorded.
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("event_ms", BigInteger, nullable=False),
    Column("first_ms", BigInteger, nullable=False),
    Column("occurrences", Integer, nullable=False),
    Column("source", String(32), nullable=False),
    Column("actor", String(16), nullable=False),
    Column("actor_key_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("rpc", String(64), nullable=False),
    Column("details", Text, nullable=False),
    # The sending service's id for events of other services; NULL for the user service's own.
    Column("source_event_id", String(64)),
    Column("record_ms", BigInteger, nullable=False),
    UniqueConstraint("source", "source_event_id", name="uq_audit_events_source_event"),
    Index("ix_audit_events_kind", "kind", "event_id"),
    Index("ix_audit_events_user", "user_id", "event_id"),
    Index("ix_audit_events_time", "event_ms"),
    sqlite_autoincrement=True,
)

HISTORY = History(
    "user_service",
    Path(__file__).parent / "migrations",
    releases=(
        (
            "0002",
            frozenset(
                {
                    "users",
                    "api_keys",
                    "balances",
                    "ledger_entries",
                    "reservations",
                    "idempotency_keys",
                    "house_balances",
                    "house_entries",
                }
            ),
        ),
        ("0001", frozenset({"users", "api_keys", "balances", "ledger_entries", "reservations", "idempotency_keys"})),
    ),
)
"""The user service's migration history; ``releases`` are the schemas of databases made before it had one."""
