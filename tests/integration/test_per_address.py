"""One cap on the conversations a client address holds, for the whole deployment and both modes: Iframe-mode
pages (admit, beat, end over real HTTP) and Socket-mode SDKs through the real relay and simulator hold slots
under one shared-state key per address, on one instance or two sharing Redis. Addresses come from the trusted
balancer's X-Forwarded-For (every test client is 127.0.0.1, the trusted address)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import REFUSAL_SENTENCES
from server.models import ConversationEvent
from server.page_budgets import heartbeat_interval
from server.settings import Settings
from tests.integration.test_relay import FakeSdk, page_session, refused
from tests.integration.test_relay_queue import QueuedSdk
from tests.redis_support import configured_redis, needs_redis
from tests.support import (
    ServerThread,
    database,
    db_session,
    eventually_async,
    make_settings,
    prepared_settings,
)

CHECK = 0.2  # budget check interval: pages beat every 1 s (a page's lease: 3 s), the relay's lease is 1.6 s
BEAT = heartbeat_interval(CHECK)
LEASE = BEAT * 3
PATH = "/api/v1/page/budget"
ONE, OTHER = "203.0.113.5", "198.51.100.7"
SENTENCE = "Too many conversations are open from your network. End one, then try again."

Served = tuple[ServerThread, FastAPI, Settings]


def capped_settings(data_dir: Path, simulator: ServerThread, cap: int, **more: Any) -> Settings:
    return prepared_settings(
        data_dir,
        simulator_url=simulator.url,
        budget_check_seconds=CHECK,
        relay_max_per_address=cap,
        **more,
    )


def serve_capped(data_dir: Path, simulator: ServerThread, cap: int) -> Iterator[Served]:
    settings = capped_settings(data_dir, simulator, cap)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app, settings


@pytest.fixture
def two_per_address(tmp_path: Path, simulator: ServerThread) -> Iterator[Served]:
    yield from serve_capped(tmp_path, simulator, 2)


@pytest.fixture
def one_per_address(tmp_path: Path, simulator: ServerThread) -> Iterator[Served]:
    yield from serve_capped(tmp_path, simulator, 1)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def ask(
    http: httpx.AsyncClient, server: ServerThread, token: str, address: str, action: str = "admit"
) -> dict[str, Any]:
    answer = await http.post(
        f"{server.url}{PATH}",
        json={"token": token, "action": action},
        headers={"X-Forwarded-For": address},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def iframe_token(server: ServerThread) -> str:
    return page_session(server, "demo-iframe")[1]


async def socket_sdk(server: ServerThread, token: str, address: str) -> FakeSdk:
    """A Socket SDK in conversation through the relay, connected from `address`."""
    sdk = FakeSdk()
    await sdk.connect(server.url, token, headers={"X-Forwarded-For": address})
    await sdk.wait_for("showAgent")
    return sdk


async def held(app: FastAPI, address: str) -> int:
    """The address's slots in the app's shared state (in process: no I/O, read from any loop)."""
    count: int = await app.state.shared.held(budgets.address_key(address))
    return count


async def flow_refusals(settings: Settings, slug: str) -> set[str]:
    """Reasons of the refusals counted on the flow (admissions that started no conversation)."""
    async with database(settings) as db:
        budget = await budgets.flow_budget(db, slug)
    assert budget is not None
    async with db_session(settings) as session:
        rows = await session.execute(
            select(ConversationEvent.detail).where(
                ConversationEvent.flow_id == budget.flow_id, ConversationEvent.kind == "refused"
            )
        )
    return {detail["reason"] for (detail,) in rows.all()}


async def test_an_address_admits_only_so_many_iframe_conversations_and_an_end_frees_one(
    tmp_path: Path, simulator: ServerThread, http: httpx.AsyncClient
) -> None:
    """Past the cap an admission from that address is refused with the relay's sentence and starts nothing;
    another address is not held back; a Retry of an admitted page is free; `end` frees a slot at once."""
    settings = capped_settings(tmp_path, simulator, 2)
    app = create_app(settings)
    with ServerThread(app) as server:
        first, second, third, elsewhere = (iframe_token(server) for _ in range(4))
        assert (await ask(http, server, first, ONE))["go"]
        assert (await ask(http, server, second, ONE))["go"]
        answer = await ask(http, server, third, ONE)
        assert (answer["go"], answer["reason"], answer["message"]) == (False, "per_address", SENTENCE)
        assert REFUSAL_SENTENCES["per_address"] == SENTENCE  # the relay's refusal reads the same
        assert (await ask(http, server, elsewhere, OTHER))["go"]
        assert (await ask(http, server, first, ONE))["go"]  # a Retry holds its own slot again
        assert await held(app, ONE) == 2
        assert (await ask(http, server, second, ONE, "end"))["go"] is False
        assert await held(app, ONE) == 1  # at once, not after a lease
        assert (await ask(http, server, third, ONE))["go"]
        assert (await ask(http, server, iframe_token(server), ONE))["reason"] == "per_address"
    # Written when the server stops (refusals that started nothing are counted per flow every 10 s).
    assert "per_address" in await flow_refusals(settings, "demo-iframe")


async def test_socket_and_iframe_conversations_from_one_address_count_together(
    two_per_address: Served, http: httpx.AsyncClient
) -> None:
    server, app, _ = two_per_address
    _, socket_token = page_session(server)
    sdk = await socket_sdk(server, socket_token, ONE)
    page = iframe_token(server)
    assert (await ask(http, server, page, ONE))["go"]
    # Both slots taken, one by each mode: the next page and the next SDK from ONE are refused alike, and
    # stay refused while the two go on well past both leases (the relay's check and the page's beats renew).
    refused_before = app.state.metrics.refusals.counts["per_address"]
    until = time.monotonic() + LEASE * 1.5
    while time.monotonic() < until:
        assert (await ask(http, server, iframe_token(server), ONE))["reason"] == "per_address"
        assert await refused(server, page_session(server)[1], headers={"X-Forwarded-For": ONE}) == SENTENCE
        assert (await ask(http, server, page, ONE, "beat"))["go"]
        await asyncio.sleep(BEAT / 2)
    assert app.state.metrics.refusals.counts["per_address"] > refused_before  # the relay's metric
    # Another address is not held back, in either mode.
    other_sdk = await socket_sdk(server, page_session(server)[1], OTHER)
    assert (await ask(http, server, iframe_token(server), OTHER))["go"]
    # The relayed conversation ends: its slot comes free at once (well within the relay's lease, 1.6 s, which
    # would free it too), and a page takes it.
    await sdk.client.disconnect()
    waiting = iframe_token(server)
    answer = await eventually_async(
        lambda: ask(http, server, waiting, ONE), lambda a: a["go"], timeout=1, interval=0.2
    )
    assert answer["go"]
    # A page's end frees a slot for a Socket SDK.
    assert await refused(server, page_session(server)[1], headers={"X-Forwarded-For": ONE}) == SENTENCE
    await ask(http, server, page, ONE, "end")
    again = await socket_sdk(server, page_session(server)[1], ONE)
    for client in (again, other_sdk):
        await client.client.disconnect()


async def test_a_connect_the_relay_refuses_after_taking_its_address_slot_gives_the_slot_back(
    two_per_address: Served, http: httpx.AsyncClient
) -> None:
    server, app, _ = two_per_address
    assert (await ask(http, server, iframe_token(server), ONE))["go"]
    # An Iframe-mode flow's token at the relay: the address's slot is taken, then the join refuses it.
    one = {"X-Forwarded-For": ONE}
    for _ in range(3):
        assert "runs in a frame" in await refused(server, iframe_token(server), "demo-iframe", headers=one)
    await eventually_async(lambda: held(app, ONE), lambda count: count == 1, timeout=1, what="one held")
    assert (await ask(http, server, iframe_token(server), ONE))["go"]


async def test_a_queued_sdk_holds_no_slot_while_it_waits_and_needs_one_to_join(
    tmp_path: Path, simulator: ServerThread, http: httpx.AsyncClient
) -> None:
    """The relay's capacity queue: a socket waiting in it holds none of its address's slots (as before), and
    when a place frees it joins only if its address has a slot left; refused, it is disconnected (the SDK's
    reconnect then reads the sentence)."""
    settings = capped_settings(tmp_path, simulator, 2, relay_max_per_flow=1)
    app = create_app(settings)
    with ServerThread(app) as server:
        first = await socket_sdk(server, page_session(server)[1], OTHER)  # the flow's one place
        queued = QueuedSdk()
        await queued.connect(server.url, page_session(server)[1], headers={"X-Forwarded-For": ONE})
        await queued.wait_for("throwToNoAgent")
        await eventually_async(lambda: held(app, ONE), lambda count: count == 0, timeout=1, what="none held")
        pages = [iframe_token(server) for _ in range(2)]
        for page in pages:
            assert (await ask(http, server, page, ONE))["go"]
        await first.client.disconnect()  # the place frees: the queued SDK is told so, and joins
        await asyncio.wait_for(queued.disconnected.wait(), 5)
        assert True in queued.answers and "showAgent" not in [name for name, _ in queued.events]
        assert app.state.relay.open_upstreams == 0 and await held(app, ONE) == 2
        await ask(http, server, pages[0], ONE, "end")
        again = await socket_sdk(server, page_session(server)[1], ONE)
        await again.client.disconnect()


async def test_a_page_that_stops_beating_frees_its_address_slot_after_the_lease(
    one_per_address: Served, http: httpx.AsyncClient
) -> None:
    server, app, _ = one_per_address
    first, second = iframe_token(server), iframe_token(server)
    assert (await ask(http, server, first, ONE))["go"]
    # Beating, the first page keeps the address's one slot well past its lease.
    until = time.monotonic() + LEASE * 1.5
    while time.monotonic() < until:
        assert (await ask(http, server, first, ONE, "beat"))["go"]
        assert (await ask(http, server, second, ONE))["reason"] == "per_address"
        await asyncio.sleep(BEAT)
    # Its tab closed without a word (no `end`): the slot comes free once the lease has run out, not before.
    silent_since = time.monotonic()
    assert (await ask(http, server, second, ONE))["reason"] == "per_address"
    answer = await eventually_async(
        lambda: ask(http, server, second, ONE), lambda a: a["go"], timeout=LEASE + 3, interval=0.3
    )
    assert answer["go"]
    assert LEASE - 1 <= time.monotonic() - silent_since <= LEASE + 2
    assert await held(app, ONE) == 1


async def test_a_page_conversation_a_beat_stops_gives_its_address_slot_back_at_once(
    one_per_address: Served, http: httpx.AsyncClient
) -> None:
    server, app, settings = one_per_address
    first = iframe_token(server)
    assert (await ask(http, server, first, ONE))["go"]
    async with database(settings) as db:
        await budgets.set_switch(db, "demo-iframe", True, "ops@example.com")
    answer = await eventually_async(
        lambda: ask(http, server, first, ONE, "beat"), lambda a: not a["go"], timeout=3, interval=0.4
    )
    assert answer["reason"] == "kill_switch"
    assert await held(app, ONE) == 0  # not after the lease: the stop lets it go
    async with database(settings) as db:
        await budgets.set_switch(db, "demo-iframe", False, "ops@example.com")
    # An operator's end, heard at the next beat, lets it go as well.
    conversation_id, second = page_session(server, "demo-iframe")
    await eventually_async(lambda: ask(http, server, second, ONE), lambda a: a["go"], timeout=3, interval=0.4)
    assert await held(app, ONE) == 1
    async with database(settings) as db:
        assert await budgets.end_conversation(db, conversation_id, "ops@example.com")
    assert (await ask(http, server, second, ONE, "beat"))["reason"] == "ended_by_operator"
    assert await held(app, ONE) == 0


@needs_redis
async def test_two_instances_sharing_redis_share_one_count_per_address(
    tmp_path: Path, simulator: ServerThread, http: httpx.AsyncClient
) -> None:
    """A's and B's conversations from one address, of both modes, hold slots under one key in Redis: what
    one instance admitted counts on the other, a reconnect to the other instance is free, and an end
    answered by either frees the slot for both."""
    with configured_redis() as (url, prefix):
        shared: dict[str, Any] = {"redis_url": url, "redis_key_prefix": prefix}
        one = capped_settings(tmp_path, simulator, 2, **shared)
        other = make_settings(  # the same database
            tmp_path,
            simulator_url=simulator.url,
            budget_check_seconds=CHECK,
            relay_max_per_address=2,
            **shared,
        )
        with ServerThread(create_app(one)) as a, ServerThread(create_app(other)) as b:
            _, socket_token = page_session(a)
            sdk = await socket_sdk(a, socket_token, ONE)
            page = iframe_token(b)
            assert (await ask(http, b, page, ONE))["go"]
            # Each instance alone holds one conversation from ONE: only a shared count refuses these.
            assert await refused(b, page_session(b)[1], headers={"X-Forwarded-For": ONE}) == SENTENCE
            assert (await ask(http, a, iframe_token(a), ONE))["reason"] == "per_address"
            assert (await ask(http, a, page, ONE, "beat"))["go"]  # beats renew on any instance
            assert (await ask(http, b, iframe_token(b), OTHER))["go"]
            # The relayed conversation's SDK reconnecting to B holds its own slot: not refused.
            moved = await socket_sdk(b, socket_token, ONE)
            await moved.client.disconnect()
            await sdk.client.disconnect()
            # The page's end, answered by A, frees the slot B admitted it under: with the SDK's gone, two
            # new pages fit, and a third is refused on either instance.
            await ask(http, a, page, ONE, "end")
            assert (await ask(http, b, iframe_token(b), ONE))["go"]
            second = iframe_token(a)
            await eventually_async(
                lambda: ask(http, a, second, ONE), lambda answer: answer["go"], timeout=3, interval=0.3
            )
            assert (await ask(http, b, iframe_token(b), ONE))["reason"] == "per_address"
