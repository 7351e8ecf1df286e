"""per-flow SDK options (one JSON column); TURN overrides without URLs are dropped

Revision ID: 0008_sdk_options
Revises: 0007_admin_console
Create Date: 2026-11-30 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_sdk_options"
down_revision: str | None = "0007_admin_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

flows = sa.table("flows", sa.column("id", sa.Integer()), sa.column("turn_override", sa.JSON()))


def upgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.add_column(sa.Column("sdk_options", sa.JSON(), nullable=True))
    # An override with no URLs reached the browser as `urls: []`, which breaks every peer connection: such a
    # flow now uses its region's TURN servers, as it would have without the override.
    connection = op.get_bind()
    for row in connection.execute(sa.select(flows.c.id, flows.c.turn_override)):
        if isinstance(row.turn_override, dict) and not row.turn_override.get("urls"):
            connection.execute(sa.update(flows).where(flows.c.id == row.id).values(turn_override=sa.null()))


def downgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("sdk_options")
