"""Fixtures shared by the whole suite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from server import migrate
from server.app import create_app
from server.db import Database
from server.flows import demo_document, import_document
from server.settings import Settings
from tests.support import ServerThread, make_settings


def seed_demo(settings: Settings) -> None:
    async def work() -> None:
        db = Database(settings.effective_database_url)
        try:
            await import_document(db, demo_document(), settings.allowed_upstream_hosts)
        finally:
            await db.dispose()

    asyncio.run(work())


def prepared_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Dev settings on a migrated SQLite database in data_dir, with the demo flows seeded."""
    value = make_settings(data_dir, **overrides)

    def prepare() -> None:
        migrate.upgrade(value.effective_database_url)
        seed_demo(value)

    # A thread of its own: Playwright's sync API keeps an event loop running in the main thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(prepare).result()
    return value


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return prepared_settings(tmp_path)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(settings)) as server:
        yield server
