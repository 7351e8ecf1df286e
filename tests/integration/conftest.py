"""Fixtures of the relay tests: a fast simulator per module, and a relay in front of it per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from server.app import create_app
from server.settings import Settings
from server.simulator import SimulatorConfig
from server.simulator import create_app as create_simulator
from tests.support import ServerThread, prepared_settings


@pytest.fixture(scope="module")
def simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator(SimulatorConfig(time_scale=0.02))) as server:
        yield server


@pytest.fixture
def relay(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, FastAPI, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, relay_connect_timeout_seconds=2.0)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app, settings


@pytest.fixture
def full_relay(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, FastAPI, Settings]]:
    """A relay that lets one conversation per flow through: the second caller is refused or queued."""
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, relay_max_per_flow=1)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app, settings
