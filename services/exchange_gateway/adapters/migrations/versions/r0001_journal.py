"""The journal as the first release made it: orders and executions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import refuse_downgrade

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _decimal() -> sa.String:
    return sa.String(64)  # exact decimal text with the value's own digits


def upgrade() -> None:
    op.create_table(
        "gateway_orders",
        sa.Column("client_order_id", sa.String(36), primary_key=True),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("time_in_force", sa.String(8)),
        sa.Column("quantity", _decimal(), nullable=False),
        sa.Column("price", _decimal()),
        sa.Column("stop_price", _decimal()),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("exchange_order_id", sa.BigInteger, nullable=False),
        sa.Column("executed_qty", _decimal(), nullable=False),
        sa.Column("cum_quote_qty", _decimal(), nullable=False),
        sa.Column("reject_reason", sa.String(500), nullable=False),
        sa.Column("create_time_ms", sa.BigInteger, nullable=False),
        sa.Column("update_time_ms", sa.BigInteger, nullable=False),
        sa.Column("request_time_ms", sa.BigInteger, nullable=False),
        sa.Column("recv_window_ms", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("reported_new", sa.Boolean, nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
    )
    op.create_index("ix_gateway_orders_open", "gateway_orders", ["final"])
    op.create_table(
        "gateway_executions",
        sa.Column(
            "sequence", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False
        ),
        sa.Column("dedup_key", sa.String(120), nullable=False, unique=True),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("exchange_order_id", sa.BigInteger, nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("exec_type", sa.String(16), nullable=False),
        sa.Column("order_status", sa.String(24), nullable=False),
        sa.Column("trade_id", sa.BigInteger, nullable=False),
        sa.Column("last_qty", _decimal(), nullable=False),
        sa.Column("last_price", _decimal(), nullable=False),
        sa.Column("last_quote_qty", _decimal(), nullable=False),
        sa.Column("cum_qty", _decimal(), nullable=False),
        sa.Column("cum_quote_qty", _decimal(), nullable=False),
        sa.Column("commission", _decimal(), nullable=False),
        sa.Column("commission_asset", sa.String(32), nullable=False),
        sa.Column("is_maker", sa.Boolean, nullable=False),
        sa.Column("reject_reason", sa.String(500), nullable=False),
        sa.Column("transaction_time_ms", sa.BigInteger, nullable=False),
        sa.Column("journal_time_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_gateway_executions_client_order_id", "gateway_executions", ["client_order_id"])


def downgrade() -> None:
    refuse_downgrade("exchange_gateway")
