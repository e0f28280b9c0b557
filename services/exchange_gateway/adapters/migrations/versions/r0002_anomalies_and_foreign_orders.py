"""Exchange anomalies (trade-key clashes, forgotten orders) and orders the gateway did not place.

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
    op.create_table(
        "gateway_anomalies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("trade_id", sa.BigInteger, nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("journaled", sa.String(500), nullable=False),
        sa.Column("received", sa.String(500), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "gateway_foreign_orders",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("exchange_order_id", sa.BigInteger, primary_key=True),
        sa.Column("client_order_id", sa.String(64), primary_key=True),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("price", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("executed_qty", sa.String(64), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("is_open", sa.Boolean, nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("cancel_time_ms", sa.BigInteger, nullable=False),
        sa.Column("cancel_error", sa.String(500), nullable=False),
    )
    op.create_index("ix_gateway_foreign_orders_open", "gateway_foreign_orders", ["is_open"])


def downgrade() -> None:
    refuse_downgrade("exchange_gateway")
