"""Migrations go up, down and up again, and the models never drift from them (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from server import migrate
from server.db import create_engine
from server.models import Base
from tests.support import fresh_postgres_database

# From scratch on purpose: these tests are the migrations' own, so no template database here.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def _inspect(url: str, work: Any) -> Any:
    async def run() -> Any:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def test_upgrade_downgrade_upgrade_round_trip(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert _inspect(database_url, _tables) == set(Base.metadata.tables)
    migrate.downgrade(database_url, "base")
    assert _inspect(database_url, _tables) == set()
    migrate.upgrade(database_url)
    assert _inspect(database_url, _tables) == set(Base.metadata.tables)


def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert _inspect(database_url, _drift) == []


def test_0008_drops_turn_overrides_without_urls(database_url: str) -> None:
    """Such an override reached the browser as `urls: []` and broke every peer connection."""
    migrate.upgrade(database_url, "0007_admin_console")
    insert = (
        "INSERT INTO flows (slug, display_name, client_id, flow_id, sdk_mode, upstream, sdk_version,"
        " genui_enabled, spoken_commands, turn_override, allowed_origins, genui_origins, enabled,"
        " created_at, updated_at) VALUES (:slug, 'F', 'c', 'f', 'socket', 'kaltura-us', 'v2.7.4', true, '[]',"
        " :turn, '[]', '[]', true, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )

    def seed(connection: Connection) -> None:
        connection.execute(text(insert), {"slug": "empty", "turn": '{"urls": [], "username": "u"}'})
        connection.execute(text(insert), {"slug": "kept", "turn": '{"urls": ["turn:t.example:3478"]}'})
        connection.commit()

    _inspect(database_url, seed)
    migrate.upgrade(database_url)

    def overrides(connection: Connection) -> dict[str, Any]:
        rows = connection.execute(text("SELECT slug, turn_override FROM flows ORDER BY slug"))
        return {slug: json.loads(turn) if isinstance(turn, str) else turn for slug, turn in rows}

    assert _inspect(database_url, overrides) == {"empty": None, "kept": {"urls": ["turn:t.example:3478"]}}
