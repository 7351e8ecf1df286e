"""The database: an async engine (SQLite via aiosqlite by default, PostgreSQL via asyncpg) and transactions.

Services receive a `Database` and open their own transactions; edges never see SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.expression import Executable

T = TypeVar("T")
log = logging.getLogger("avatar_bff.db")
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)  # seconds before each retry: a restart of a few seconds is ridden out
# SQLSTATE classes worth a retry of the whole transaction: a lost or refused connection (08…), a server
# shutting down or starting (57P…), a transaction rolled back by a deadlock or serialization failure (40…).
_TRANSIENT_STATES = ("08", "57P", "40")


class DatabaseUnavailable(Exception):
    """The database could not be reached for the whole retry window; the cause is chained."""


def is_transient(exc: BaseException) -> bool:
    """The connection failed (the server restarting, a failover, the network) or the transaction lost a
    deadlock, rather than the statement being wrong: a retry of the whole transaction may succeed."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    driver = getattr(exc.orig, "driver_exception", exc.orig)  # asyncpg's own exception, under SQLAlchemy's
    sqlstate = str(getattr(driver, "sqlstate", "") or "")
    # asyncpg's InternalClientError: a connection left mid-operation when the server went away.
    return (
        exc.connection_invalidated
        or sqlstate.startswith(_TRANSIENT_STATES)
        or type(driver).__name__ == "InternalClientError"
    )


async def retry_transient(work: Callable[[], Awaitable[T]], delays: tuple[float, ...] = RETRY_DELAYS) -> T:
    """Run `work` (a whole transaction, safe to repeat) again while it fails for a transient reason; raises
    DatabaseUnavailable once `delays` are used up. Pooled connections that died are replaced on the way
    (`pool_pre_ping`)."""
    for delay in (*delays, None):
        try:
            return await work()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if delay is None:
                raise DatabaseUnavailable(type(exc).__name__) from exc
            log.warning("database transaction failed (%s); retrying in %.1f s", type(exc).__name__, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def create_engine(url: str) -> AsyncEngine:
    """Create the engine; SQLite gets WAL, full fsync and enforced foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        _private_file(Path(parsed.database))
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does: its -wal and -shm files copy the mode.

    A file left group/world readable by an older version is tightened too; transcripts are personal data.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


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


def insert_many_ignoring_conflicts(dialect: str, table: Any, keys: list[str]) -> Executable:
    """The same statement without values, for `session.execute(statement, rows)`: SQLAlchemy sends the rows
    in batches of one cached statement, where `.values(rows)` compiles (and PostgreSQL prepares) new SQL
    for every number of rows."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing(index_elements=keys)
