"""photos.verdict_details: the pre-flight error details per category (missing landmarks,
reason, people boxes) so later requests answer with the same details as the upload;
photos.body: the measured silhouette widths and on-body landmarks, so a placement recomputed
later (another garment length) uses the same inputs as the one made at upload

Revision ID: h10_0004
Revises: h9a_0005
Create Date: 2026-12-11 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "h10_0004"
down_revision: str | None = "h9a_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable: photos analysed before this column answer with the message alone
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("verdict_details", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("body", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("body")
        batch.drop_column("verdict_details")
