"""The server-rendered DPP reaches the service before the greeting every time, by protocol order alone: the
relay sends it just before the SDK's `approvedPermissions`, and the simulator greets at once on that."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from server.settings import Settings
from tests.integration.test_relay import FakeSdk, page_session
from tests.support import ServerThread

RUNS = 8
ORDERED = ("setDynamicPrompt", "approvedPermissions", "generatingSpeech")


async def test_every_greeting_uses_the_injected_dpp(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay

    async def one_run() -> tuple[str, list[str]]:
        _, token = page_session(server)
        sdk = FakeSdk()
        await sdk.connect(server.url, token)
        await sdk.wait_for("showAgent")
        await sdk.client.emit("approvedPermissions", {})  # at once: nothing waits for anything
        greeting = (await sdk.wait_for("generatingSpeech"))["text"]
        async with httpx.AsyncClient() as http:  # this loop keeps serving the other runs meanwhile
            sessions = (await http.get(f"{simulator.url}/_sim/sessions")).json()
        upstream_sid = app.state.relay.bridges[sdk.client.get_sid()].upstream.sid
        session = next(s for s in sessions if s["socket_sid"] == upstream_sid)
        order = [e["event"] for e in session["events"] if e["event"] in ORDERED]
        await sdk.client.disconnect()
        return greeting, order

    results = await asyncio.gather(*(one_run() for _ in range(RUNS)))
    assert all(greeting.startswith("Hello Ana!") for greeting, _ in results)
    assert all(order == list(ORDERED) for _, order in results)
