"""Alembic, driven from code: upgrade to head and tell whether the schema is current."""

from __future__ import annotations

from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.db import Database
from server.paths import MIGRATIONS_DIR


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations (synchronously: alembic's env runs its own event loop)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@cache
def head_revision() -> str | None:
    """The newest migration in the code (read from disk once per process)."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)


async def unready_reason(db: Database) -> tuple[str | None, str | None]:
    """(why the database cannot serve yet or None, its revision): it must answer and be at the newest one."""
    try:
        async with db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        current = await current_revision(db.engine)
    except (SQLAlchemyError, OSError) as exc:
        return f"database unreachable: {type(exc).__name__}", None
    head = head_revision()
    if current != head:
        return f"migrations not applied (database at {current}, code at {head})", current
    return None, current
