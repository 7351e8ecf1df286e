"""One live upstream per conversation: a newer connect with the same page token replaces the older bridge."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import socketio
from fastapi import FastAPI

from server.relay.sockets import RelayHub
from server.settings import Settings
from tests.integration.test_relay import FakeSdk, no_upstream_left, page_session
from tests.support import ServerThread, eventually_async, stored_transcript


def simulated(simulator: ServerThread, upstream_sid: str) -> dict[str, object]:
    sessions = httpx.get(f"{simulator.url}/_sim/sessions").json()
    return dict(next(s for s in sessions if s["socket_sid"] == upstream_sid))


async def test_a_reconnect_with_the_same_token_replaces_the_older_bridge_and_the_transcript_is_not_doubled(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, settings = relay
    hub: RelayHub = app.state.relay
    session_id, token = page_session(server)
    older = FakeSdk()
    await older.connect(server.url, token)
    await older.wait_for("showAgent")
    await older.client.emit("approvedPermissions", {})
    await older.wait_for("stvFinishedTalking")
    older_upstream = hub.bridges[older.client.get_sid()].upstream.sid

    newer = FakeSdk()  # the SDK's own reconnect (or socket.io's retry) with the same page token
    await newer.connect(server.url, token)
    await asyncio.wait_for(older.disconnected.wait(), 5)  # the older socket is let go by the server
    assert hub.open_upstreams == 1 and list(hub.bridges) == [newer.client.get_sid()]
    await eventually_async(
        lambda: simulated(simulator, older_upstream)["ended"], lambda ended: ended is True, what="older one"
    )
    await newer.wait_for("showAgent")
    await newer.client.emit("approvedPermissions", {})
    await newer.wait_for("stvFinishedTalking")
    await newer.client.emit("onTextEntered", {"isFinal": True, "text": "said once"})
    await newer.wait_for("stvFinishedTalking", count=2)
    lines = await eventually_async(
        lambda: stored_transcript(settings, session_id), lambda found: len(found) >= 4, what="the transcript"
    )
    await asyncio.sleep(0.3)  # a doubled line would be written by now too
    lines = await stored_transcript(settings, session_id)
    said = [(e.role, e.text) for e in lines]
    # The older session's greeting, the newer one's, the visitor's line and its answer: each exactly once.
    assert [role for role, _ in said] == ["Avatar", "Avatar", "User", "Avatar"]
    assert said[2] == ("User", "said once")
    await newer.client.disconnect()
    await no_upstream_left(app)
    assert not hub.by_conversation and not hub.per_flow


async def test_socketios_retry_of_a_socket_the_sdk_left_is_refused_and_the_new_socket_stays(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay
    hub: RelayHub = app.state.relay
    _, token = page_session(server)
    first = FakeSdk()
    await first.connect(server.url, token)
    await first.wait_for("showAgent")  # it sent its `join`: after a drop the SDK leaves this socket
    await first.client.disconnect()  # the network drops
    await no_upstream_left(app)

    reconnected = FakeSdk()  # the SDK's own reconnect: a new stickyId
    await reconnected.connect(server.url, token)
    await reconnected.wait_for("showAgent")
    retry = FakeSdk()  # socket.io retrying the left socket: the same page token and stickyId
    with contextlib.suppress(socketio.exceptions.ConnectionError):
        await retry.connect(server.url, token, sticky=first.sticky)
    assert "replaced by a newer one" in retry.refusal
    assert list(hub.bridges) == [reconnected.client.get_sid()] and not reconnected.disconnected.is_set()
    await reconnected.client.emit("onTextEntered", {"isFinal": True, "text": "still here"})
    assert (await reconnected.wait_for("agentTurnToTalk"))["userTranscription"] == "still here"

    await reconnected.client.disconnect()
    await no_upstream_left(app)


async def test_a_reconnect_at_full_capacity_takes_over_its_own_slot_instead_of_queueing(
    full_relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, _ = full_relay
    hub: RelayHub = app.state.relay
    _, token = page_session(server)
    older, newer = FakeSdk(), FakeSdk()
    await older.connect(server.url, token)
    await older.wait_for("showAgent")
    await newer.connect(server.url, token)
    await newer.wait_for("showAgent")  # not `throwToNoAgent`: the flow's one slot was its own
    assert "throwToNoAgent" not in [name for name, _ in newer.events]
    await asyncio.wait_for(older.disconnected.wait(), 5)
    assert hub.open_upstreams == 1 and dict(hub.per_flow) == {"demo": 1}
    stranger = FakeSdk()  # another visitor still finds the flow full
    await stranger.connect(server.url, page_session(server)[1])
    await stranger.wait_for("throwToNoAgent")
    for sdk in (newer, stranger):
        await sdk.client.disconnect()
    await no_upstream_left(app)
