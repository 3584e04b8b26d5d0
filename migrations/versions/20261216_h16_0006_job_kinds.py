"""Job kinds: compose jobs and batches reuse the try-on job row and its state machine.

``kind`` (tryon | compose | batch), ``parent_id`` (a batch's children point at it; deleting the
batch deletes them), and ``photo_id``/``garment_id`` nullable: a compose job's scene or
reference may be an upload stored under the job's own prefix instead of a photo or garment.

Revision ID: h16_0006
Revises: h10_0004
Create Date: 2026-12-16 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "h16_0006"
down_revision: str | None = "h10_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tryon_jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="tryon"))
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.create_foreign_key("fk_tryon_jobs_parent_id_tryon_jobs", "tryon_jobs",
                                 ["parent_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_tryon_jobs_parent_id", ["parent_id"])
        batch.alter_column("photo_id", existing_type=sa.String(32), nullable=True)
        batch.alter_column("garment_id", existing_type=sa.String(32), nullable=True)


def downgrade() -> None:
    # compose jobs without a photo or garment cannot be represented in the old schema
    op.execute("DELETE FROM tryon_jobs WHERE kind <> 'tryon' OR photo_id IS NULL "
               "OR garment_id IS NULL")
    with op.batch_alter_table("tryon_jobs") as batch:
        batch.alter_column("garment_id", existing_type=sa.String(32), nullable=False)
        batch.alter_column("photo_id", existing_type=sa.String(32), nullable=False)
        batch.drop_index("ix_tryon_jobs_parent_id")
        batch.drop_constraint("fk_tryon_jobs_parent_id_tryon_jobs", type_="foreignkey")
        batch.drop_column("parent_id")
        batch.drop_column("kind")
