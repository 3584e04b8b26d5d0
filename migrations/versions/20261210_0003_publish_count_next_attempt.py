"""tryon_jobs.publish_count (reaper republish backoff), webhook_deliveries.next_attempt_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # existing queued rows read as "published at most once": the reaper's first re-publish of
    # them waits the base republish interval, as before
    with op.batch_alter_table("tryon_jobs") as batch:
        batch.add_column(sa.Column("publish_count", sa.Integer(), nullable=False,
                                   server_default="0"))
    # NULL for existing rows: a pending delivery without it is treated as never retried
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("next_attempt_at")
    with op.batch_alter_table("tryon_jobs") as batch:
        batch.drop_column("publish_count")
