"""Parked effects, the order updates WatchOrders replays (with each user's sequence), and an order type
column wide enough for TAKE_PROFIT_LIMIT.

A database made between releases by code without a version table may already have some of these
tables (adopted as revision 0001): only the missing ones are created.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import refuse_downgrade

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "parked_effects" not in existing:
        op.create_table(
            "parked_effects",
            sa.Column("entry_id", sa.Integer, primary_key=True),
            sa.Column("order_id", sa.String(40), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("parked_ms", sa.BigInteger, nullable=False),
        )
    if "order_updates" not in existing:
        op.create_table(
            "order_updates",
            sa.Column("user_id", sa.String(40), primary_key=True),
            sa.Column("sequence", sa.BigInteger, primary_key=True),
            sa.Column("order_id", sa.String(40), nullable=False),
            sa.Column("snapshot", sa.Text, nullable=False),
            sa.Column("event_ms", sa.BigInteger, nullable=False),
        )
        op.create_index("order_updates_time", "order_updates", ["event_ms"])
    if "user_sequences" not in existing:
        op.create_table(
            "user_sequences",
            sa.Column("user_id", sa.String(40), primary_key=True),
            sa.Column("last", sa.BigInteger, nullable=False),
        )
    # SQLite cannot alter a column: batch mode copies the table (its indexes come along).
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("type", existing_type=sa.String(12), type_=sa.String(20), existing_nullable=False)


def downgrade() -> None:
    refuse_downgrade("order_service")
