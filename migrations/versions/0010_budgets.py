"""session budgets per flow, and kill switches (per flow and global)

Revision ID: 0010_budgets
Revises: 0009_flow_refusals
Create Date: 2026-11-30 20:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_budgets"
down_revision: str | None = "0009_flow_refusals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUDGET_COLUMNS = ("max_duration_seconds", "idle_cut_seconds", "max_concurrent", "minutes_per_day")


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        for name in BUDGET_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
    op.create_table(
        "kill_switches",
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("flow_id", sa.Integer(), nullable=True),
        sa.Column("engaged_by", sa.String(length=254), nullable=False),
        sa.Column("engaged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_kill_switches_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_kill_switches")),
        sa.UniqueConstraint("flow_id", name=op.f("uq_kill_switches_flow_id")),
    )


def downgrade() -> None:
    op.drop_table("kill_switches")
    with op.batch_alter_table("flows") as batch:
        for name in reversed(BUDGET_COLUMNS):
            batch.drop_column(name)
