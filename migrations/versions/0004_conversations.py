"""sessions become conversations; a page view is no longer one

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:40:00.000000

The table `sessions` is renamed `conversations` and `transcript_entries.session_id` becomes
`conversation_id`, with their constraints and indexes renamed after the naming convention. Rows still
`created` and without a transcript line were page views that never became a conversation (they held a
rendered prompt and the visitor's query values): they are deleted. Other `created` rows become `active`
(housekeeping ends them when idle), and the never-used `expired` becomes `ended`. A downgrade restores the
names; the statuses stay valid for the old code.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = {"table": "sessions", "column": "session_id"}
NEW = {"table": "conversations", "column": "conversation_id"}


def _conversations_table(names: dict[str, str]) -> None:
    t = names["table"]
    op.create_table(
        t,
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("flow_id", sa.Integer(), nullable=False),
        sa.Column("template_version_id", sa.Integer(), nullable=True),
        sa.Column("rendered_dpp", sa.JSON(), nullable=True),
        sa.Column("visitor_context", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["flow_id"], ["flows.id"], name=f"fk_{t}_flow_id_flows", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["template_version_id"],
            ["dpp_template_versions.id"],
            name=f"fk_{t}_template_version_id_dpp_template_versions",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{t}"),
    )


def _entries_table(name: str, names: dict[str, str]) -> None:
    t, c = names["table"], names["column"]
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(c, sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("pronunciation_score", sa.SmallInteger(), nullable=True),
        sa.ForeignKeyConstraint([c], [f"{t}.id"], name=f"fk_transcript_entries_{c}_{t}", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_transcript_entries"),
        sa.UniqueConstraint(c, "source", "seq", name=f"uq_transcript_entries_{c}"),
    )


def _rename_sqlite(old: dict[str, str], new: dict[str, str]) -> None:
    """SQLite keeps constraint names inside each table's SQL: build the new tables, copy the rows over."""
    columns = (
        "id, flow_id, template_version_id, rendered_dpp, visitor_context, status, end_reason, created_at,"
        " ended_at, last_activity_at"
    )
    entry_columns = "id, {}, seq, role, text, timestamp, source, pronunciation_score"
    _conversations_table(new)
    op.execute(f"INSERT INTO {new['table']} ({columns}) SELECT {columns} FROM {old['table']}")  # noqa: S608
    _entries_table("transcript_entries_new", new)
    op.execute(
        f"INSERT INTO transcript_entries_new ({entry_columns.format(new['column'])}) "  # noqa: S608
        f"SELECT {entry_columns.format(old['column'])} FROM transcript_entries"
    )
    # Children first: with foreign keys on, dropping a referenced table deletes the rows pointing at it.
    op.drop_table("transcript_entries")
    op.drop_table(old["table"])
    op.rename_table("transcript_entries_new", "transcript_entries")
    op.create_index(f"ix_{new['table']}_flow_created", new["table"], ["flow_id", "created_at"])
    op.create_index(f"ix_transcript_entries_{new['column']}", "transcript_entries", [new["column"]])


def _rename_postgresql(old: dict[str, str], new: dict[str, str]) -> None:
    """PostgreSQL renames in place (no copy of the transcripts); a constraint's rename carries its index."""
    o, n, oc, nc = old["table"], new["table"], old["column"], new["column"]
    op.rename_table(o, n)
    for suffix in ("flow_id_flows", "template_version_id_dpp_template_versions"):
        op.execute(f"ALTER TABLE {n} RENAME CONSTRAINT fk_{o}_{suffix} TO fk_{n}_{suffix}")
    op.execute(f"ALTER TABLE {n} RENAME CONSTRAINT pk_{o} TO pk_{n}")
    op.execute(f"ALTER INDEX ix_{o}_flow_created RENAME TO ix_{n}_flow_created")
    op.alter_column("transcript_entries", oc, new_column_name=nc)
    op.execute(
        f"ALTER TABLE transcript_entries RENAME CONSTRAINT fk_transcript_entries_{oc}_{o}"
        f" TO fk_transcript_entries_{nc}_{n}"
    )
    op.execute(
        f"ALTER TABLE transcript_entries RENAME CONSTRAINT uq_transcript_entries_{oc}"
        f" TO uq_transcript_entries_{nc}"
    )
    op.execute(f"ALTER INDEX ix_transcript_entries_{oc} RENAME TO ix_transcript_entries_{nc}")


def _rename(old: dict[str, str], new: dict[str, str]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rename_sqlite(old, new)
    else:
        _rename_postgresql(old, new)


def upgrade() -> None:
    op.execute(
        "DELETE FROM sessions WHERE status = 'created'"
        " AND NOT EXISTS (SELECT 1 FROM transcript_entries e WHERE e.session_id = sessions.id)"
    )
    op.execute("UPDATE sessions SET status = 'active' WHERE status = 'created'")
    op.execute("UPDATE sessions SET status = 'ended' WHERE status = 'expired'")
    _rename(OLD, NEW)


def downgrade() -> None:
    _rename(NEW, OLD)
