"""The user service as the first release made it: users, API keys, balances, the ledger, reservations
and idempotency keys; ledger entries append-only.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import append_only_ddl
from shared.migrations import refuse_downgrade

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _money() -> sa.String:
    return sa.String(48)  # canonical decimal text, 8 places


def _not_negative(*columns: str) -> list[sa.CheckConstraint]:
    return [sa.CheckConstraint(f"{c} NOT LIKE '-%'", name=f"ck_{c}_not_negative") for c in columns]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(30), primary_key=True),
        sa.Column("username", sa.String(32), nullable=False, unique=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
        sa.Column("last_login_ms", sa.BigInteger),
    )
    op.create_index("ix_users_status", "users", ["status", "user_id"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(30), primary_key=True),
        sa.Column("user_id", sa.String(30), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("revoke_ms", sa.BigInteger),
        sa.Column("last_used_ms", sa.BigInteger),
    )
    op.create_index("ix_api_keys_user", "api_keys", ["user_id", "key_id"])
    op.create_table(
        "balances",
        sa.Column("user_id", sa.String(30), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("available", _money(), nullable=False),
        sa.Column("locked", _money(), nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "asset"),
        *_not_negative("available", "locked"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(30), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("available_delta", _money(), nullable=False),
        sa.Column("locked_delta", _money(), nullable=False),
        sa.Column("available_after", _money(), nullable=False),
        sa.Column("locked_after", _money(), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("order_id", sa.String(64)),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ledger_user", "ledger_entries", ["user_id", "entry_id"])
    op.create_index("ix_ledger_user_asset", "ledger_entries", ["user_id", "asset", "entry_id"])
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(30), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("reserved", _money(), nullable=False),
        sa.Column("consumed", _money(), nullable=False),
        sa.Column("released", _money(), nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
        *_not_negative("reserved", "consumed", "released"),
    )
    op.create_index("ix_reservations_user", "reservations", ["user_id", "asset"])
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    for statement in append_only_ddl(op.get_bind().dialect.name, "ledger_entries", "ledger entries are append-only"):
        op.execute(statement)


def downgrade() -> None:
    refuse_downgrade("user_service")
