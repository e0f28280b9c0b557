"""API keys' scopes and expiry, and the append-only audit trail.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import append_only_ddl
from shared.migrations import refuse_downgrade

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_key_grants",
        sa.Column("key_id", sa.String(30), sa.ForeignKey("api_keys.key_id"), primary_key=True),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("expire_ms", sa.BigInteger),
    )
    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event_ms", sa.BigInteger, nullable=False),
        sa.Column("first_ms", sa.BigInteger, nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(16), nullable=False),
        sa.Column("actor_key_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False),
        sa.Column("rpc", sa.String(64), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("source_event_id", sa.String(64)),
        sa.Column("record_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("source", "source_event_id", name="uq_audit_events_source_event"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_events_kind", "audit_events", ["kind", "event_id"])
    op.create_index("ix_audit_events_user", "audit_events", ["user_id", "event_id"])
    op.create_index("ix_audit_events_time", "audit_events", ["event_ms"])
    dialect = op.get_bind().dialect.name
    for statement in append_only_ddl(dialect, "api_key_grants", "API key grants are fixed at creation"):
        op.execute(statement)
    for statement in append_only_ddl(dialect, "audit_events", "audit events are append-only"):
        op.execute(statement)


def downgrade() -> None:
    refuse_downgrade("user_service")
