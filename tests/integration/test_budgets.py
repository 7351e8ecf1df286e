"""Session budgets and kill switches, enforced by the real relay against the simulator, with python-socketio
clients speaking the SDK's protocol: what a visitor is told, what is recorded, what the relay lets go."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.models import Conversation
from server.relay.sockets import RelayHub
from server.settings import Settings
from tests.admin.console_client import ConsoleClient, create_admin
from tests.factories import change_flow, create_flow
from tests.integration.test_relay import FakeSdk, page_session, refused
from tests.support import (
    ServerThread,
    database,
    db_session,
    eventually_async,
    prepared_settings,
    stored_transcript,
)

CHECK = 0.2  # budget check interval in these tests: cuts land within a few of these

Relay = tuple[ServerThread, FastAPI, Settings]


@pytest.fixture
def budget_relay(tmp_path: Path, simulator: ServerThread) -> Iterator[Relay]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, budget_check_seconds=CHECK)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app, settings


async def set_budget(settings: Settings, slug: str = "demo", **limits: Any) -> None:
    async with database(settings) as db:
        await change_flow(db, slug, **limits)


async def switch(settings: Settings, slug: str | None, engaged: bool) -> None:
    async with database(settings) as db:
        await budgets.set_switch(db, slug, engaged, "ops@example.com")


async def live_sdk(server: ServerThread, slug: str = "demo") -> tuple[FakeSdk, str, str]:
    """A page's SDK in conversation (the greeting heard): it, its conversation id and page token."""
    session_id, token = page_session(server, slug)
    sdk = FakeSdk()
    await sdk.connect(server.url, token, slug)
    await sdk.wait_for("showAgent")
    await sdk.client.emit("approvedPermissions", {})
    await sdk.wait_for("stvFinishedTalking")
    return sdk, session_id, token


def console_post(server: ServerThread, settings: Settings, path: str) -> int:
    """An admin's form post in the console of `server` (signed in as a new admin)."""
    email = create_admin(settings, f"ops-{path.count('/')}-{id(server)}@example.com")
    with ConsoleClient(server.url) as admin:
        assert admin.sign_in(email).status_code == 303
        return admin.post(path).status_code


async def ended(settings: Settings, conversation_id: str) -> Conversation:
    async with db_session(settings) as session:
        conversation = await session.get(Conversation, conversation_id)
    assert conversation is not None
    return conversation


async def test_a_flow_at_its_cap_refuses_the_next_conversation_but_not_a_reconnect(
    budget_relay: Relay,
) -> None:
    server, app, settings = budget_relay
    await set_budget(settings, max_concurrent=1)
    hub: RelayHub = app.state.relay  # a budget applies from the relay's next check
    await eventually_async(lambda: hub.budgets.budgets.flows["demo"].max_concurrent, lambda cap: cap == 1)
    first, first_id, first_token = await live_sdk(server)
    _, second_token = page_session(server)
    assert await refused(server, second_token) == STOP_SENTENCES["budget_concurrent"]
    # The same conversation connecting again (the SDK's reconnect) takes over its own slot.
    again = FakeSdk()
    await again.connect(server.url, first_token)
    await again.wait_for("showAgent")
    await asyncio.wait_for(first.disconnected.wait(), 5)
    # Its conversation ends: the slot comes free, and the next visitor gets in.
    await again.client.disconnect()
    later = await eventually_async(lambda: _sdk_in(server, second_token), lambda sdk: sdk is not None)
    assert later is not None
    await later.wait_for("showAgent")
    await later.client.disconnect()
    async with db_session(settings) as session:
        refused_started = await session.get(Conversation, first_id)
    assert refused_started is not None


async def _sdk_in(server: ServerThread, token: str) -> FakeSdk | None:
    sdk = FakeSdk()
    try:
        await sdk.connect(server.url, token)
    except Exception:  # refused: the caller tries again
        return None
    return sdk


async def test_minutes_of_the_day_used_up_end_live_conversations_and_refuse_new_ones(
    budget_relay: Relay,
) -> None:
    server, app, settings = budget_relay
    await set_budget(settings, minutes_per_day=2)
    sdk, conversation_id, token = await live_sdk(server)
    hub: RelayHub = app.state.relay
    flow_id = hub.budgets.budgets.flows["demo"].flow_id
    # Relayed time is counted: the day's counter grows while the conversation lasts.
    key = budgets.seconds_key(flow_id, budgets.today())
    shared = app.state.shared
    await eventually_async(lambda: shared.add(key, 0, ttl_seconds=60), lambda s: s > 0, what="the count")
    await shared.add(key, 120, ttl_seconds=60)  # the rest of the day's two minutes, used elsewhere
    await asyncio.wait_for(sdk.disconnected.wait(), 5)
    conversation = await ended(settings, conversation_id)
    assert conversation.end_reason == "budget_minutes"
    assert await refused(server, token) == STOP_SENTENCES["budget_minutes"]
    _, fresh = page_session(server)
    assert await refused(server, fresh) == STOP_SENTENCES["budget_minutes"]
    assert hub.open_upstreams == 0


async def test_the_longest_conversation_is_cut_with_its_transcript_kept(budget_relay: Relay) -> None:
    server, app, settings = budget_relay
    await set_budget(settings, max_duration_seconds=2)
    sdk, conversation_id, token = await live_sdk(server)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(sdk.disconnected.wait(), 6)
    assert asyncio.get_running_loop().time() - started < 2 + 10 * CHECK
    conversation = await ended(settings, conversation_id)
    assert (conversation.status, conversation.end_reason) == ("ended", "budget_duration")
    heard = [data["agentContent"] for name, data in sdk.events if name == "stvFinishedTalking"]
    stored = [entry.text for entry in await stored_transcript(settings, conversation_id)]
    assert heard and all(line in stored for line in heard)  # what was said before the cut is kept
    # The SDK's reconnect is refused with the sentence the page shows.
    assert await refused(server, token) == STOP_SENTENCES["budget_duration"]
    assert app.state.relay.open_upstreams == 0


async def test_the_idle_cut_waits_for_a_silent_visitor(budget_relay: Relay) -> None:
    server, _, settings = budget_relay
    await set_budget(settings, idle_cut_seconds=1)
    sdk, conversation_id, _ = await live_sdk(server)
    for _ in range(8):  # typing keeps it going well past the idle cut
        await sdk.client.emit("onTextEntered", {"text": "still here"})
        await asyncio.sleep(0.3)
    assert not sdk.disconnected.is_set()
    await asyncio.wait_for(sdk.disconnected.wait(), 1 + 10 * CHECK)
    assert (await ended(settings, conversation_id)).end_reason == "budget_idle"


async def test_kill_switches_end_live_conversations_within_seconds_and_refuse_new_ones(
    budget_relay: Relay, simulator: ServerThread
) -> None:
    server, app, settings = budget_relay
    async with database(settings) as db:
        await create_flow(db, "other", upstream="simulator")
    demo, demo_id, demo_token = await live_sdk(server)
    other, other_id, _ = await live_sdk(server, "other")
    await switch(settings, "demo", True)
    await asyncio.wait_for(demo.disconnected.wait(), 3)
    assert (await ended(settings, demo_id)).end_reason == "kill_switch"
    assert await refused(server, demo_token) == STOP_SENTENCES["kill_switch"]
    assert not other.disconnected.is_set()  # another flow's switch is its own
    await switch(settings, None, True)  # every flow
    await asyncio.wait_for(other.disconnected.wait(), 3)
    assert (await ended(settings, other_id)).end_reason == "kill_switch"
    _, fresh_other = page_session(server, "other")
    assert await refused(server, fresh_other, "other") == STOP_SENTENCES["kill_switch"]
    await switch(settings, None, False)
    await switch(settings, "demo", False)
    await eventually_async(
        lambda: app.state.relay.budgets.budgets, lambda b: not b.all_killed and not b.flows["demo"].killed
    )
    back, _, _ = await live_sdk(server)
    await back.client.disconnect()
    assert app.state.relay.open_upstreams == 0 or await _no_upstreams(app)


async def _no_upstreams(app: FastAPI) -> bool:
    await eventually_async(lambda: app.state.relay.open_upstreams, lambda n: n == 0, what="open upstreams")
    return True


async def test_an_operator_ends_a_live_conversation_from_the_console(budget_relay: Relay) -> None:
    server, app, settings = budget_relay
    sdk, conversation_id, token = await live_sdk(server)
    path = f"/admin/conversations/{conversation_id}/end"
    assert await asyncio.to_thread(console_post, server, settings, path) == 303
    await asyncio.wait_for(sdk.disconnected.wait(), 3)
    assert (await ended(settings, conversation_id)).end_reason == "ended_by_operator"
    heard = [data["agentContent"] for name, data in sdk.events if name == "stvFinishedTalking"]
    stored = [entry.text for entry in await stored_transcript(settings, conversation_id)]
    assert heard and all(line in stored for line in heard)
    assert await refused(server, token) == STOP_SENTENCES["ended_by_operator"]
    await _no_upstreams(app)


async def test_an_operator_s_end_reaches_a_relay_that_missed_the_message(budget_relay: Relay) -> None:
    """Ended in the database only (as when Redis is down and the control message reaches no other instance):
    the relay holding the conversation ends it at its next budget check."""
    server, app, settings = budget_relay
    sdk, conversation_id, token = await live_sdk(server)
    async with database(settings) as db:
        assert await budgets.end_conversation(db, conversation_id, "ops@example.com")
    await asyncio.wait_for(sdk.disconnected.wait(), 10 * CHECK)
    assert (await ended(settings, conversation_id)).end_reason == "ended_by_operator"
    assert await refused(server, token) == STOP_SENTENCES["ended_by_operator"]
    await _no_upstreams(app)
