"""The simulator's Iframe SDK upstream: sdk-assets, and the meeting WebSocket driven as meet.js drives it."""

from __future__ import annotations

import asyncio
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


async def meeting_greeting(url: str, prompt: dict[str, Any] | None, after: float) -> str:
    """Join a meeting as meet.js does, inject `prompt` `after` s past `showing-agent`; the greeting."""
    async with connect(url.replace("http", "ws") + "/meet-ws?client=c1&flow=f1") as ws:
        await next_event(ws, "session")
        await ws.send(json.dumps({"event": "join", "data": {}}))
        await next_event(ws, "showing-agent")
        if prompt is not None:
            await asyncio.sleep(after)
            await ws.send(json.dumps({"event": "prompt", "data": {"content": json.dumps(prompt)}}))
        return str((await next_event(ws, "generatingSpeech"))["text"])


async def test_a_meeting_greets_as_soon_as_the_parents_dpp_is_in_every_time() -> None:
    # Real time: the page injects 500 ms after `showing-agent`, as the SDK's guide says.
    with ServerThread(create_app(SimulatorConfig(time_scale=1.0))) as server:
        ana = {"user": {"first_name": "Ana"}}
        greetings = await asyncio.gather(*(meeting_greeting(server.url, ana, 0.5) for _ in range(5)))
        assert all(greeting.startswith("Hello Ana!") for greeting in greetings)
        # A page that injects nothing is greeted all the same, without a name, once the wait is over.
        assert (await meeting_greeting(server.url, None, 0)).startswith("Hello! I am")
