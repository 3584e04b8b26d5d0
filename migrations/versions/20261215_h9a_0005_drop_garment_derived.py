"""garments.derived dropped: written for every job, read by nothing (the cached objects are
found by their fixed keys under the garment's derived/ prefix)

Revision ID: h9a_0005
Revises: h9a_0004
Create Date: 2026-12-15 00:00:01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "h9a_0005"
down_revision: str | None = "h9a_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("garments") as batch:
        batch.drop_column("derived")


def downgrade() -> None:
    with op.batch_alter_table("garments") as batch:
        batch.add_column(sa.Column("derived", sa.JSON(), nullable=False, server_default="{}"))
