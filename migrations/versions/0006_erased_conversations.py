"""erased conversations are remembered until their page tokens have expired

Revision ID: 0006_erased_conversations
Revises: 0005_page_context
Create Date: 2026-11-30 16:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_erased_conversations"
down_revision: str | None = "0005_page_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erased_conversations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erased_conversations")),
    )


def downgrade() -> None:
    op.drop_table("erased_conversations")
