"""The relay's own capacity refusal keeps the SDK's queue working: polls are answered, a freed slot admits."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from server.relay.sockets import RelayHub
from server.settings import Settings
from tests.integration.test_relay import FakeSdk, joined, no_upstream_left, page_session
from tests.support import ServerThread, eventually_async

POLL_SECONDS = 0.1  # the SDK waits 30 s and more between polls (S:142); the relay does not care how long


class QueuedSdk(FakeSdk):
    """Also plays the SDK's queue (S:480-560): on `throwToNoAgent` it polls `checkAvailability`, sends the
    next poll only after an answer, and on `available: true` sends `join` again."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[bool] = []

    async def _record(self, event: str, *args: Any) -> None:
        await super()._record(event, *args)
        data = args[0] if args else None
        if event == "throwToNoAgent":
            await self._poll()
        elif event == "availabilityResult" and isinstance(data, dict):
            self.answers.append(bool(data.get("available")))
            if data.get("available"):
                await self.client.emit("join", {"client": "TOKEN", "room": "r1", "userAgent": "test"})
            else:
                await self._poll()

    async def _poll(self) -> None:
        await asyncio.sleep(POLL_SECONDS)
        if self.client.connected:
            await self.client.emit("checkAvailability", {})


async def test_a_queued_sdk_polls_hears_still_full_and_is_admitted_when_a_slot_frees(
    full_relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = full_relay
    hub: RelayHub = app.state.relay
    first = await joined(server)
    queued = QueuedSdk()
    _, token = page_session(server)
    await queued.connect(server.url, token)
    await queued.wait_for("throwToNoAgent")
    await eventually_async(lambda: queued.answers, lambda a: len(a) >= 3, what="answered polls")
    assert not any(queued.answers) and queued.client.connected and hub.open_upstreams == 1

    await first.client.disconnect()  # a slot frees: the next poll is told so, and the SDK joins
    await queued.wait_for("showAgent")
    assert queued.answers[-1] is True and hub.open_upstreams == 1
    await queued.client.emit("approvedPermissions", {})
    greeting = await queued.wait_for("stvFinishedTalking")
    assert greeting["agentContent"].startswith("Hello Ana!")  # the conversation's own DPP went up too

    sid = hub.bridges[queued.client.get_sid()].upstream.sid
    sessions = httpx.get(f"{simulator.url}/_sim/sessions").json()
    upstream = next(s for s in sessions if s["socket_sid"] == sid)
    sent_up = [e["event"] for e in upstream["events"] if e["dir"] == "in" and e["event"] != "connect"]
    # What the SDK sends on a greeting (it never saw one), once each and in its order, then the rest.
    assert sent_up[:3] == ["isValidSession", "join", "stvNewSession"]
    assert "onServerConnected" not in [name for name, _ in queued.events]
    joins = [e["data"] for e in upstream["events"] if e["dir"] == "in" and e["event"] == "join"]
    assert [j["client"] for j in joins] == ["demo-client"]  # the real id, not the page's token
    await queued.client.disconnect()
    await no_upstream_left(app)
    assert not hub.per_flow and hub.connecting == 0


async def test_a_slot_held_for_a_queued_sdk_is_given_back_if_it_leaves(
    full_relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, _ = full_relay
    hub: RelayHub = app.state.relay
    first = await joined(server)
    queued = FakeSdk()  # polls by hand, and never joins
    await queued.connect(server.url, page_session(server)[1])
    await queued.wait_for("throwToNoAgent")
    await first.client.disconnect()
    await no_upstream_left(app)
    await queued.client.emit("checkAvailability", {})
    assert (await queued.wait_for("availabilityResult"))["available"] is True
    assert hub.connecting == 1  # held for it
    await queued.client.disconnect()
    await eventually_async(lambda: (hub.connecting, dict(hub.per_flow)), lambda v: v == (0, {}))
    again = await joined(server)  # the slot is there for the next caller
    await again.client.disconnect()


async def test_a_queued_socket_that_stops_polling_or_is_replaced_is_let_go(
    full_relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, _ = full_relay
    hub: RelayHub = app.state.relay
    hub.waiting.silence_seconds = 0.5
    first = await joined(server)
    silent = FakeSdk()  # an SDK without a queue: error 6001, and it never polls
    await silent.connect(server.url, page_session(server)[1])
    await silent.wait_for("throwToNoAgent")
    await asyncio.wait_for(silent.disconnected.wait(), 5)

    hub.waiting.silence_seconds = 60
    _, token = page_session(server)
    old, new = FakeSdk(), FakeSdk()
    await old.connect(server.url, token)
    await old.wait_for("throwToNoAgent")
    await new.connect(server.url, token)  # the SDK's own reconnect, same page token
    await asyncio.wait_for(old.disconnected.wait(), 5)
    await new.wait_for("throwToNoAgent")
    assert len(hub.waiting) == 1 and new.client.connected
    for sdk in (first, new):
        await sdk.client.disconnect()


async def test_a_poll_from_a_socket_that_was_never_queued_is_not_answered_by_the_relay(
    relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, _ = relay
    sdk = await joined(server)
    # A bridged socket's poll goes upstream as it is (the simulator answers it), not to the waiting room.
    assert (await sdk.client.call("checkAvailability", {}, timeout=5)) is None
    await sdk.wait_for("availabilityResult")
    assert len(app.state.relay.waiting) == 0
    await sdk.client.disconnect()
