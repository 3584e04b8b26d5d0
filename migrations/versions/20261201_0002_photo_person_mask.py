"""photos.person_mask_key: the stored person segmentation for shape-aware target masks

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable, no default: existing photos simply have no mask (jobs fall back to the box)
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("person_mask_key", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("person_mask_key")
