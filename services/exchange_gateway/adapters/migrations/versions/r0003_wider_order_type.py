"""An order type column wide enough for TAKE_PROFIT_LIMIT.

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
    # SQLite cannot alter a column: batch mode copies the table (its indexes come along).
    with op.batch_alter_table("gateway_orders") as batch:
        batch.alter_column("type", existing_type=sa.String(16), type_=sa.String(20), existing_nullable=False)


def downgrade() -> None:
    refuse_downgrade("exchange_gateway")
