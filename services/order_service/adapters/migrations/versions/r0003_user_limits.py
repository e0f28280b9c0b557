"""Per-user order limits set by an admin.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import refuse_downgrade

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_limits",
        sa.Column("user_id", sa.String(40), primary_key=True),
        sa.Column("orders_per_second", sa.String(48), nullable=False),
        sa.Column("max_open_orders", sa.Integer, nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    refuse_downgrade("order_service")
