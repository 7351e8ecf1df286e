"""The database: an async engine (SQLite via aiosqlite by default, PostgreSQL via asyncpg) and transactions.

Services receive a `Database` and open their own transactions; edges never see SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.expression import Executable


def create_engine(url: str) -> AsyncEngine:
    """Create the engine; SQLite gets WAL, full fsync and enforced foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


class Database:
    """One engine and its sessions. `transaction()` commits on success and rolls back on any error."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: nothing is committed."""
        async with self._sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def insert_ignoring_conflicts(
    dialect: str, table: Any, rows: list[dict[str, Any]], keys: list[str]
) -> Executable:
    """INSERT … ON CONFLICT (keys) DO NOTHING: the database, not a read before the write, decides."""
    if dialect == "postgresql":
        return postgresql_insert(table).values(rows).on_conflict_do_nothing(index_elements=keys)
    return sqlite_insert(table).values(rows).on_conflict_do_nothing(index_elements=keys)
