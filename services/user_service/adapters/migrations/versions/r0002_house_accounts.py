"""House accounts: the platform's fee income and exchange fees, with their own append-only entries.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import append_only_ddl
from shared.migrations import refuse_downgrade

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "house_balances",
        sa.Column("account", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("balance", sa.String(48), nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "asset"),
    )
    op.create_table(
        "house_entries",
        sa.Column("entry_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.String(48), nullable=False),
        sa.Column("balance_after", sa.String(48), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("create_ms", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_house_entries_account", "house_entries", ["account", "asset", "entry_id"])
    op.create_index("ix_house_entries_asset", "house_entries", ["asset", "entry_id"])
    for statement in append_only_ddl(op.get_bind().dialect.name, "house_entries", "house entries are append-only"):
        op.execute(statement)


def downgrade() -> None:
    refuse_downgrade("user_service")
