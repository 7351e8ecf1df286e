"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.settings import Settings
from tests.support import ServerThread, drop_postgres_template, prepared_settings, use_template_dir


@pytest.fixture(scope="session", autouse=True)
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Migrate (and seed) once per run, on first use; each test gets a copy."""
    use_template_dir(tmp_path_factory.mktemp("templates"))
    yield
    drop_postgres_template()
    use_template_dir(None)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return prepared_settings(tmp_path)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(settings)) as server:
        yield server
