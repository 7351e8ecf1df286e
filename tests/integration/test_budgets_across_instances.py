"""Budgets and kill switches across two app instances sharing one database and one Redis (the configured
AVATAR_BFF_REDIS_URL), with real SDK-protocol clients; and a relay whose Redis is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.settings import Settings
from tests.admin.console_client import ConsoleClient, create_admin
from tests.factories import change_flow
from tests.integration.test_budgets import console_post, ended, live_sdk, set_budget
from tests.integration.test_relay import FakeSdk, page_session, refused
from tests.redis_support import RedisServer, configured_redis, needs_redis, needs_redis_server
from tests.support import ServerThread, free_port, make_settings, prepared_settings, with_database

Pair = tuple[tuple[ServerThread, FastAPI], tuple[ServerThread, FastAPI], Settings]


@contextmanager
def two_instances(
    data_dir: Path, simulator: ServerThread, b_check_seconds: float, **limits: Any
) -> Iterator[Pair]:
    """Two instances on one database and one Redis, the demo flow's budget set before they start."""
    with configured_redis() as (url, prefix):
        shared = {"simulator_url": simulator.url, "redis_url": url, "redis_key_prefix": prefix}
        one = prepared_settings(data_dir, budget_check_seconds=0.2, **shared)
        other = make_settings(data_dir, budget_check_seconds=b_check_seconds, **shared)  # the same database
        if limits:
            with_database(one, lambda db: change_flow(db, "demo", **limits))
        first_app, second_app = create_app(one), create_app(other)
        with ServerThread(first_app) as first, ServerThread(second_app) as second:
            yield (first, first_app), (second, second_app), one


@pytest.fixture
def capped_pair(tmp_path: Path, simulator: ServerThread) -> Iterator[Pair]:
    with two_instances(tmp_path, simulator, 0.2, max_concurrent=1) as pair:
        yield pair


@pytest.fixture
def iframe_capped_pair(tmp_path: Path, simulator: ServerThread) -> Iterator[Pair]:
    """The demo flow in Iframe mode, capped at one conversation (its relay still takes a Socket SDK)."""
    with two_instances(tmp_path, simulator, 0.2, max_concurrent=1, sdk_mode="iframe") as pair:
        yield pair


@pytest.fixture
def slow_pair(tmp_path: Path, simulator: ServerThread) -> Iterator[Pair]:
    """B reads its database only every 30 s: what reaches it sooner came through Redis."""
    with two_instances(tmp_path, simulator, 30) as pair:
        yield pair


@needs_redis
async def test_the_cap_holds_across_instances_and_a_reconnect_elsewhere_is_not_counted_twice(
    capped_pair: Pair,
) -> None:
    (a, _), (b, _), _ = capped_pair
    first, _, first_token = await live_sdk(a)
    _, second_token = page_session(b)
    assert await refused(b, second_token) == STOP_SENTENCES["budget_concurrent"]
    # The first visitor's SDK reconnecting to the other instance (its own having gone) takes its own slot.
    moved = FakeSdk()
    await moved.connect(b.url, first_token)
    await moved.wait_for("showAgent")
    assert await refused(a, page_session(a)[1]) == STOP_SENTENCES["budget_concurrent"]
    await moved.client.disconnect()
    await first.client.disconnect()


@needs_redis
async def test_a_kill_switch_used_on_one_instance_ends_a_conversation_bridged_on_the_other(
    slow_pair: Pair,
) -> None:
    (a, _), (b, b_app), settings = slow_pair
    sdk, conversation_id, token = await live_sdk(b)
    email = create_admin(settings, "ops@example.com")
    with ConsoleClient(a.url) as admin:
        assert admin.sign_in(email).status_code == 303
        admin.get("/admin/budgets")
        switched = asyncio.get_running_loop().time()
        assert (await asyncio.to_thread(admin.post, "/admin/budgets/demo/kill")).status_code == 303
    await asyncio.wait_for(sdk.disconnected.wait(), 5)
    assert asyncio.get_running_loop().time() - switched < 5
    assert (await ended(settings, conversation_id)).end_reason == "kill_switch"
    assert b_app.state.relay.open_upstreams == 0
    # B refuses new conversations at once too (the message made it re-read the switches).
    assert await refused(b, page_session(b)[1]) == STOP_SENTENCES["kill_switch"]
    assert await refused(b, token) == STOP_SENTENCES["kill_switch"]


@needs_redis
async def test_an_operator_on_one_instance_ends_a_conversation_bridged_on_the_other(slow_pair: Pair) -> None:
    (a, _), (b, b_app), settings = slow_pair
    sdk, conversation_id, token = await live_sdk(b)
    path = f"/admin/conversations/{conversation_id}/end"
    assert await asyncio.to_thread(console_post, a, settings, path) == 303
    await asyncio.wait_for(sdk.disconnected.wait(), 3)
    assert (await ended(settings, conversation_id)).end_reason == "ended_by_operator"
    assert b_app.state.relay.open_upstreams == 0
    assert await refused(b, token) == STOP_SENTENCES["ended_by_operator"]


async def test_a_relay_whose_redis_is_down_serves_its_own_browsers_and_says_so(
    tmp_path: Path, simulator: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = prepared_settings(
        tmp_path, simulator_url=simulator.url, redis_url=dead, budget_check_seconds=0.2
    )
    app = create_app(settings)
    with caplog.at_level(logging.WARNING, logger="avatar_bff.relay"), ServerThread(app) as server:
        await set_budget(settings, max_duration_seconds=2)
        sdk, conversation_id, _ = await live_sdk(server)
        await asyncio.wait_for(sdk.disconnected.wait(), 6)  # budgets hold on this instance's own counts
        assert (await ended(settings, conversation_id)).end_reason == "budget_duration"
    assert any("Redis cannot be reached" in r.getMessage() for r in caplog.records)


@needs_redis_server
async def test_redis_going_away_mid_conversation_leaves_the_relay_serving_and_ending_its_own(
    tmp_path: Path, simulator: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    settings = prepared_settings(
        tmp_path, simulator_url=simulator.url, redis_url=redis_server.url, budget_check_seconds=0.2
    )
    with caplog.at_level(logging.WARNING, logger="avatar_bff.relay"):
        server = ServerThread(create_app(settings)).__enter__()
        try:
            sdk, conversation_id, _ = await live_sdk(server)
            redis_server.stop()  # killed, as a crash would
            # Ending it still works on this instance: python-socketio delivers locally, the relay says so.
            path = f"/admin/conversations/{conversation_id}/end"
            assert await asyncio.to_thread(console_post, server, settings, path) == 303
            await asyncio.wait_for(sdk.disconnected.wait(), 5)
            assert (await ended(settings, conversation_id)).end_reason == "ended_by_operator"
            # New conversations still run.
            again, _, _ = await live_sdk(server)
            await again.client.disconnect()
        finally:
            await asyncio.to_thread(server.stop)
            redis_server.stop()
    assert any("Redis cannot be reached" in r.getMessage() for r in caplog.records)


@needs_redis
async def test_an_iframe_page_on_one_instance_and_a_socket_sdk_on_the_other_share_one_cap(
    iframe_capped_pair: Pair,
) -> None:
    """A page admitted by A holds the flow's one slot in Redis: B's relay refuses a Socket SDK (the budget
    is checked first); the page's beats and its end, answered by B, renew and free that same slot."""
    (a, _), (b, _), _ = iframe_capped_pair
    async with httpx.AsyncClient(timeout=10) as http:

        async def ask(server: ServerThread, token: str, action: str) -> dict[str, Any]:
            answer = await http.post(
                f"{server.url}/api/v1/page/budget", json={"token": token, "action": action}
            )
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        _, page_token = page_session(a)
        assert (await ask(a, page_token, "admit"))["go"]
        assert await refused(b, page_session(b)[1]) == STOP_SENTENCES["budget_concurrent"]
        assert (await ask(b, page_token, "beat"))["go"]
        assert await refused(a, page_session(a)[1]) == STOP_SENTENCES["budget_concurrent"]
        _, next_token = page_session(b)
        assert (await ask(b, next_token, "admit"))["reason"] == "budget_concurrent"
        await ask(b, page_token, "end")
        assert (await ask(a, next_token, "admit"))["go"]  # the slot came free at once, on both instances
        await ask(a, next_token, "end")
