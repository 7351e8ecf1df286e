"""Fixtures shared by the whole suite, and the markers every test gets from where it lives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.settings import Settings
from tests.support import (
    ServerThread,
    drop_postgres_template,
    make_settings,
    migrated_postgres_database,
    prepared_settings,
    run_async,
    seed_demo,
    use_template_dir,
)

BROWSER_TESTS = Path(__file__).parent / "browser"


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    needs_postgres = pytest.mark.skip(reason="needs AVATAR_BFF_TEST_DATABASE_URL (PostgreSQL)")
    for item in items:
        if item.path.is_relative_to(BROWSER_TESTS):
            item.add_marker(pytest.mark.browser)
        if item.get_closest_marker("postgres") and not os.environ.get("AVATAR_BFF_TEST_DATABASE_URL"):
            item.add_marker(needs_postgres)


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a migrated, demo-seeded database: SQLite, then PostgreSQL when one is configured."""
    if request.param == "sqlite":
        yield prepared_settings(tmp_path)
    else:
        with migrated_postgres_database() as url:
            settings = make_settings(tmp_path, database_url=url)
            run_async(lambda: seed_demo(settings))
            yield settings


@pytest.fixture
def live_server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(settings)) as server:
        yield server
