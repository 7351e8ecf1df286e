"""The simulator's Iframe SDK upstream: sdk-assets, and the meeting WebSocket driven as meet.js drives it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from server.simulator import SimulatorConfig, create_app
from tests.support import ServerThread


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerThread]:
    with ServerThread(create_app(SimulatorConfig(time_scale=0.01))) as server:
        yield server


async def next_event(ws: ClientConnection, name: str) -> Any:
    while True:
        message = json.loads(await ws.recv(decode=True))
        if message["event"] == name:
            return message["data"]


def test_sdk_assets_have_the_shapes_the_iframe_sdk_declares(sim: ServerThread) -> None:
    assets = httpx.get(f"{sim.url}/clients/c1/flow/f1/sdk-assets").json()
    assert assets["language"] == {"languageCode": "en"}
    assert set(assets["design"]) == {"logo", "theme", "color"}
    assert all(isinstance(value, str) for value in assets["design"].values())
    assert set(assets["avatar"]) == {"given_name", "images", "videos"}
    assert assets["talk_url"].endswith("/meet/c1/f1")


async def test_a_meeting_tells_its_parent_about_failures_on_request(sim: ServerThread) -> None:
    url = sim.url.replace("http", "ws") + "/meet-ws?client=c1&flow=f1"
    async with connect(url) as ws:
        meeting = (await next_event(ws, "session"))["id"]
        hook = f"{sim.url}/_sim/meetings/{meeting}/emit"
        for event in ("permissions-denied", "load-agent-error"):
            assert httpx.post(hook, json={"event": event}).json() == {"ok": True}
            told = await next_event(ws, "to-parent")  # meet.js posts it to the parent under this name
            assert told["event"] == event
        assert httpx.post(hook, json={"event": "conversation-ended"}).status_code == 400
        assert httpx.post(hook, content=b"nope").status_code == 400
    assert (
        httpx.post(f"{sim.url}/_sim/meetings/nope/emit", json={"event": "load-agent-error"}).status_code
        == 404
    )
