"""GenUI HTML from the avatar service reaches the page sanitised, through the real relay and simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from server.app import create_app
from server.settings import Settings
from server.simulator import SimulatorConfig
from server.simulator import create_app as create_simulator
from tests.integration.test_relay import joined, upstream_of
from tests.support import ServerThread, prepared_settings

REFRESH = '<meta http-equiv="refresh" content="0;url=https://evil.example/">'


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


async def test_show_html_cannot_send_the_visitor_away(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay
    sdk = await joined(server)
    upstream = upstream_of(app, simulator, sdk)
    async with httpx.AsyncClient() as http:
        said = await http.post(
            f"{simulator.url}/_sim/sessions/{upstream['id']}/say",
            json={"event": "showHtml", "data": {"mediaUrl": REFRESH + "<h2>Plans</h2>"}},
        )
    assert said.json() == {"ok": True}
    shown = await sdk.wait_for("showHtml")
    assert shown == {"mediaUrl": "<h2>Plans</h2>"}
    await sdk.client.disconnect()
