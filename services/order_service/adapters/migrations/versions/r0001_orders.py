"""The order store as the first release made it: orders, fills, the outbox and the execution cursor.

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


def _money() -> sa.String:
    return sa.String(48)  # canonical decimal text, 8 places


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(30), nullable=False),
        sa.Column("base_asset", sa.String(20), nullable=False),
        sa.Column("quote_asset", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(12), nullable=False),
        sa.Column("time_in_force", sa.String(3), nullable=False),
        sa.Column("quantity", _money(), nullable=False),
        sa.Column("price", _money(), nullable=True),
        sa.Column("stop_price", _money(), nullable=True),
        sa.Column("expire_time_ms", sa.BigInteger, nullable=True),
        sa.Column("reserve_asset", sa.String(20), nullable=False),
        sa.Column("reserve_amount", _money(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("filled_quantity", _money(), nullable=False),
        sa.Column("filled_quote_quantity", _money(), nullable=False),
        sa.Column("commission", _money(), nullable=False),
        sa.Column("commission_asset", sa.String(20), nullable=False),
        sa.Column("reject_reason", sa.Text, nullable=False),
        sa.Column("exchange_order_id", sa.String(24), nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("expire_requested", sa.Boolean, nullable=False),
        sa.Column("create_time_ms", sa.BigInteger, nullable=False),
        sa.Column("update_time_ms", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("orders_user_client_id", "orders", ["user_id", "client_order_id"], unique=True)
    op.create_index("orders_user_newest", "orders", ["user_id", "order_id"])
    op.create_index("orders_state", "orders", ["state"])
    op.create_table(
        "fills",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fill_id", sa.String(64), nullable=False, unique=True),
        sa.Column("order_id", sa.String(40), nullable=False),
        sa.Column("symbol", sa.String(30), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("price", _money(), nullable=False),
        sa.Column("quantity", _money(), nullable=False),
        sa.Column("quote_quantity", _money(), nullable=False),
        sa.Column("commission", _money(), nullable=False),
        sa.Column("commission_asset", sa.String(20), nullable=False),
        sa.Column("is_maker", sa.Boolean, nullable=False),
        sa.Column("trade_time_ms", sa.BigInteger, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("fills_order", "fills", ["order_id", "id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "cursor",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    refuse_downgrade("order_service")
