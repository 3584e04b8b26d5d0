"""worker_processes: the worker registry (engines, queues, ready state, heartbeat)

Revision ID: h9a_0004
Revises: 0003
Create Date: 2026-12-15 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "h9a_0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_processes",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("engines", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_processes")),
    )
    op.create_index(op.f("ix_worker_processes_heartbeat_at"), "worker_processes",
                    ["heartbeat_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_worker_processes_heartbeat_at"), table_name="worker_processes")
    op.drop_table("worker_processes")
