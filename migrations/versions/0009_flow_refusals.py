"""refusals before a conversation started are kept on their flow's timeline

Revision ID: 0009_flow_refusals
Revises: 0008_sdk_options
Create Date: 2026-11-30 18:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_flow_refusals"
down_revision: str | None = "0008_sdk_options"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation_events") as batch:
        batch.alter_column("conversation_id", existing_type=sa.String(length=32), nullable=True)
        batch.add_column(sa.Column("flow_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_conversation_events_flow_id_flows"), "flows", ["flow_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(batch.f("ix_conversation_events_flow_id"), ["flow_id"])


def downgrade() -> None:
    op.execute("DELETE FROM conversation_events WHERE conversation_id IS NULL")
    with op.batch_alter_table("conversation_events") as batch:
        batch.drop_index(batch.f("ix_conversation_events_flow_id"))
        batch.drop_constraint(batch.f("fk_conversation_events_flow_id_flows"), type_="foreignkey")
        batch.drop_column("flow_id")
        batch.alter_column("conversation_id", existing_type=sa.String(length=32), nullable=False)
