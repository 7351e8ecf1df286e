"""Admin console fixtures: the app on loopback with the demo flows, and signed-in admin and viewer clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.settings import Settings
from tests.admin.console_client import ConsoleClient, create_admin
from tests.support import ServerThread, prepared_settings


@pytest.fixture
def console_settings(tmp_path: Path) -> Settings:
    return prepared_settings(tmp_path)


@pytest.fixture
def console(console_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(console_settings)) as server:
        yield server


@pytest.fixture
def admin(console: ServerThread, console_settings: Settings) -> Iterator[ConsoleClient]:
    email = create_admin(console_settings, "admin@example.com")
    with ConsoleClient(console.url) as client:
        assert client.sign_in(email).status_code == 303
        yield client


@pytest.fixture
def viewer(console: ServerThread, console_settings: Settings) -> Iterator[ConsoleClient]:
    email = create_admin(console_settings, "viewer@example.com", role="viewer")
    with ConsoleClient(console.url) as client:
        assert client.sign_in(email).status_code == 303
        yield client
