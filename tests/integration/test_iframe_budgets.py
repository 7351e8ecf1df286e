"""Budgets and kill switches for Iframe-mode pages, over real HTTP: what a page is answered when it asks to
start (admit), while its meeting runs (beat) and when it ends, and what is counted and recorded; socket and
iframe conversations of a flow held against one cap, by the real relay and simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.models import Conversation, ConversationEvent
from server.page_budgets import heartbeat_interval
from server.security.signing import PAGE_SESSION, Signer
from server.settings import Settings
from tests.factories import change_flow, create_api_token
from tests.integration.test_relay import FakeSdk, page_session, refused
from tests.support import ServerThread, database, db_session, eventually_async, prepared_settings

CHECK = 0.2  # budget check interval: pages beat every 1 s, and a slot's lease is 3 s
BEAT = heartbeat_interval(CHECK)
LEASE = BEAT * 3
PATH = "/api/v1/page/budget"

Served = tuple[ServerThread, FastAPI, Settings]


@pytest.fixture
def served(tmp_path: Path, simulator: ServerThread) -> Iterator[Served]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, budget_check_seconds=CHECK)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app, settings


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served[0].url, timeout=10) as client:
        yield client


async def ask(http: httpx.AsyncClient, token: str, action: str = "admit") -> dict[str, Any]:
    answer = await http.post(PATH, json={"token": token, "action": action})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def iframe_page(server: ServerThread, slug: str = "demo-iframe") -> tuple[str, str]:
    return page_session(server, slug)


async def set_budget(settings: Settings, slug: str = "demo-iframe", **limits: Any) -> None:
    async with database(settings) as db:
        await change_flow(db, slug, **limits)


async def switch(settings: Settings, slug: str | None, engaged: bool) -> None:
    async with database(settings) as db:
        await budgets.set_switch(db, slug, engaged, "ops@example.com")


async def conversation_of(settings: Settings, conversation_id: str) -> Conversation | None:
    async with db_session(settings) as session:
        return await session.get(Conversation, conversation_id)


async def events_of(settings: Settings, conversation_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with db_session(settings) as session:
        rows = await session.execute(
            select(ConversationEvent.kind, ConversationEvent.detail)
            .where(ConversationEvent.conversation_id == conversation_id)
            .order_by(ConversationEvent.id)
        )
    return [(kind, detail or {}) for kind, detail in rows.all()]


async def flow_id(settings: Settings, slug: str = "demo-iframe") -> int:
    async with database(settings) as db:
        budget = await budgets.flow_budget(db, slug)
    assert budget is not None
    return budget.flow_id


def seconds_today(app: FastAPI, flow: int) -> float:
    """The flow's day counter, read from the running app's shared state (in process: no I/O, any loop)."""
    total: float = asyncio.run(app.state.shared.total(budgets.seconds_key(flow, budgets.today())))
    return total


async def test_admission_starts_the_conversation_and_is_refused_per_reason_with_the_socket_sentence(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, app, settings = served
    conversation_id, token = iframe_page(server)
    answer = await ask(http, token)
    assert answer == {"go": True, "reason": None, "message": None, "heartbeat_seconds": BEAT}
    started = await conversation_of(settings, conversation_id)
    assert started is not None and started.status == "active"
    assert ("page_admitted", {}) in await events_of(settings, conversation_id)

    # The flow's kill switch, then the global one: nothing starts, and the page reads the relay's sentence.
    await switch(settings, "demo-iframe", True)
    await asyncio.sleep(CHECK)  # switches are read at most this long ago, as at the relay
    refused_id, refused_token = iframe_page(server)
    assert await ask(http, refused_token) == {
        "go": False,
        "reason": "kill_switch",
        "message": STOP_SENTENCES["kill_switch"],
        "heartbeat_seconds": BEAT,
    }
    assert await conversation_of(settings, refused_id) is None  # a refusal starts nothing
    await switch(settings, "demo-iframe", False)
    await switch(settings, None, True)
    await asyncio.sleep(CHECK)
    assert (await ask(http, iframe_page(server)[1]))["reason"] == "kill_switch"
    await switch(settings, None, False)
    await asyncio.sleep(CHECK)

    # The day's minutes used up (by any conversation of the flow, on any instance).
    await set_budget(settings, minutes_per_day=1)
    await asyncio.sleep(CHECK)
    await asyncio.to_thread(
        lambda: asyncio.run(
            app.state.shared.add(budgets.seconds_key(started.flow_id, budgets.today()), 60, ttl_seconds=60)
        )
    )
    answer = await ask(http, iframe_page(server)[1])
    assert (answer["go"], answer["reason"], answer["message"]) == (
        False,
        "budget_minutes",
        STOP_SENTENCES["budget_minutes"],
    )
    # The refusals are counted on the flow (no conversation started), as the relay counts its own.
    await eventually_async(
        lambda: _flow_refusals(settings, started.flow_id),
        lambda reasons: {"kill_switch", "budget_minutes"} <= reasons,
        timeout=20,
        interval=0.5,
        what="the flow's refusals on the timeline",
    )


async def _flow_refusals(settings: Settings, flow: int) -> set[str]:
    async with db_session(settings) as session:
        rows = await session.execute(
            select(ConversationEvent.detail).where(
                ConversationEvent.flow_id == flow, ConversationEvent.kind == "refused"
            )
        )
    return {detail["reason"] for (detail,) in rows.all()}


async def test_socket_and_iframe_conversations_of_a_flow_count_against_one_cap(
    served: Served, http: httpx.AsyncClient
) -> None:
    """The relay's hold (a Socket SDK connected) and a page's hold (admitted) are slots under one key: an
    operator who switches a flow from Socket to Iframe mode mid-conversation keeps one cap for both."""
    server, _, settings = served
    await set_budget(settings, "demo", max_concurrent=1)
    await asyncio.sleep(CHECK * 3)  # the relay's next check reads the cap
    sdk = FakeSdk()
    _, socket_token = page_session(server)
    await sdk.connect(server.url, socket_token, "demo")
    await sdk.wait_for("showAgent")
    # A Socket-mode flow's slots are the relay's to hold and free: a page cannot take or give one here.
    for action in ("admit", "beat", "end"):
        response = await http.post(PATH, json={"token": socket_token, "action": action})
        assert response.status_code == 409 and response.json()["code"] == "not_iframe_mode", response.text
    await set_budget(settings, "demo", sdk_mode="iframe")
    await asyncio.sleep(CHECK)  # budgets are read at most this long ago
    _, page_token = page_session(server)
    answer = await ask(http, page_token)
    assert (answer["go"], answer["message"]) == (False, STOP_SENTENCES["budget_concurrent"])
    await sdk.client.disconnect()  # the relayed conversation ends: its slot comes free at once
    answer = await eventually_async(lambda: ask(http, page_token), lambda a: a["go"], timeout=5)
    # Now the page holds the flow's one slot: a Socket SDK is refused with the same sentence.
    _, other_token = page_session(server)
    assert await refused(server, other_token) == STOP_SENTENCES["budget_concurrent"]
    await ask(http, page_token, "end")


async def test_heartbeats_renew_the_slot_a_silent_page_loses_it_after_the_lease_and_end_frees_it_at_once(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, _, settings = served
    await set_budget(settings, max_concurrent=1)
    await asyncio.sleep(CHECK)
    _, first = iframe_page(server)
    _, second = iframe_page(server)
    assert (await ask(http, first))["go"]
    # Beating, the first page keeps its slot well past its lease.
    until = time.monotonic() + LEASE * 1.5
    while time.monotonic() < until:
        assert (await ask(http, first, "beat"))["go"]
        assert (await ask(http, second))["reason"] == "budget_concurrent"
        await asyncio.sleep(BEAT)
    # Its tab closed without a word: the slot comes free once the lease has run out, not before.
    silent_since = time.monotonic()
    assert (await ask(http, second))["reason"] == "budget_concurrent"
    await eventually_async(lambda: ask(http, second), lambda a: a["go"], timeout=LEASE + 3, interval=0.3)
    waited = time.monotonic() - silent_since
    assert LEASE - 1 <= waited <= LEASE + 2
    # A page that ends its call gives the slot back at once.
    assert (await ask(http, second, "end"))["go"] is False
    _, third = iframe_page(server)
    assert (await ask(http, third))["go"]


async def test_live_time_is_counted_and_the_days_minutes_stop_a_live_page(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, app, settings = served
    await set_budget(settings, minutes_per_day=1)
    await asyncio.sleep(CHECK)
    flow = await flow_id(settings)
    conversation_id, token = iframe_page(server)
    before = await asyncio.to_thread(seconds_today, app, flow)
    assert (await ask(http, token))["go"]
    await asyncio.sleep(BEAT)
    assert (await ask(http, token, "beat"))["go"]
    await asyncio.sleep(BEAT)
    assert (await ask(http, token, "beat"))["go"]
    counted = await asyncio.to_thread(seconds_today, app, flow) - before
    assert 2 * BEAT - 0.2 <= counted <= 2 * BEAT + 1.5  # the time between admission and the last beat
    # The rest of the day's minute is used by someone else: the next beat stops this page.
    await asyncio.to_thread(
        lambda: asyncio.run(
            app.state.shared.add(budgets.seconds_key(flow, budgets.today()), 60, ttl_seconds=60)
        )
    )
    answer = await ask(http, token, "beat")
    assert (answer["go"], answer["reason"], answer["message"]) == (
        False,
        "budget_minutes",
        STOP_SENTENCES["budget_minutes"],
    )
    ended = await conversation_of(settings, conversation_id)
    assert ended is not None and (ended.status, ended.end_reason) == ("ended", "budget_minutes")
    assert ("end", {"reason": "budget_minutes", "by": "page_budget"}) in await events_of(
        settings, conversation_id
    )
    # Its Retry is refused with the same sentence, and so is a new visitor.
    assert (await ask(http, token))["message"] == STOP_SENTENCES["budget_minutes"]
    assert (await ask(http, iframe_page(server)[1]))["reason"] == "budget_minutes"


async def test_a_kill_switch_reaches_a_live_page_within_one_heartbeat(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, _, settings = served
    conversation_id, token = iframe_page(server)
    assert (await ask(http, token))["go"]
    assert (await ask(http, token, "beat"))["go"]
    await switch(settings, "demo-iframe", True)
    engaged = time.monotonic()
    # The page beats every BEAT; the first beat that sees the switch (read at most CHECK ago) stops it.
    while (answer := await ask(http, token, "beat"))["go"]:
        assert time.monotonic() - engaged < BEAT + CHECK
        await asyncio.sleep(BEAT / 4)
    assert time.monotonic() - engaged <= BEAT + CHECK
    assert (answer["reason"], answer["message"]) == ("kill_switch", STOP_SENTENCES["kill_switch"])
    ended = await conversation_of(settings, conversation_id)
    assert ended is not None and ended.end_reason == "kill_switch"


async def test_the_longest_conversation_idle_cut_and_operator_end_stop_a_live_page(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, _, settings = served
    await set_budget(settings, max_duration_seconds=2)
    await asyncio.sleep(CHECK)
    conversation_id, token = iframe_page(server)
    assert (await ask(http, token))["go"]
    answer = await eventually_async(lambda: ask(http, token, "beat"), lambda a: not a["go"], timeout=5)
    assert answer["reason"] == "budget_duration"
    ended = await conversation_of(settings, conversation_id)
    assert ended is not None and ended.end_reason == "budget_duration"

    # The idle cut: what the server sees of the visitor is their transcript lines (the page flushes them
    # before each beat). Speaking keeps it going past the cut; silence ends it. The visitor's clock plays no
    # part: these lines say they were typed an hour ago.
    await set_budget(settings, max_duration_seconds=None, idle_cut_seconds=2)
    await asyncio.sleep(CHECK)
    conversation_id, token = iframe_page(server)
    assert (await ask(http, token))["go"]
    for seq in range(1, 6):
        typed = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        line = {"seq": seq, "role": "User", "text": "still here", "timestamp": typed}
        posted = await http.post("/api/v1/page/transcript", json={"token": token, "entries": [line]})
        assert posted.status_code == 200, posted.text
        assert (await ask(http, token, "beat"))["go"]
        await asyncio.sleep(0.6)
    answer = await eventually_async(lambda: ask(http, token, "beat"), lambda a: not a["go"], timeout=5)
    assert (answer["reason"], answer["message"]) == ("budget_idle", STOP_SENTENCES["budget_idle"])

    # An operator ends a live page's conversation: its next beat says so.
    conversation_id, token = iframe_page(server)
    await set_budget(settings, idle_cut_seconds=None)
    assert (await ask(http, token))["go"]
    async with database(settings) as db:
        assert await budgets.end_conversation(db, conversation_id, "ops@example.com")
    answer = await ask(http, token, "beat")
    assert (answer["reason"], answer["message"]) == ("ended_by_operator", STOP_SENTENCES["ended_by_operator"])


async def test_bad_questions_are_refused_with_a_clear_message_never_a_500(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, _, settings = served
    conversation_id, token = iframe_page(server)

    async def refusal(body: Any, status: int, **kwargs: Any) -> str:
        answer = await http.post(PATH, content=body, **kwargs) if isinstance(body, bytes) else None
        answer = answer or await http.post(PATH, json=body, **kwargs)
        assert answer.status_code == status, answer.text
        message: str = answer.json()["message"]
        return message

    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert "not valid" in await refusal({"token": forged, "action": "admit"}, 401)
    expired = Signer(settings.secret).sign(PAGE_SESSION, {"sid": "x", "flow": "demo-iframe"}, 60, now=0)
    assert "expired" in await refusal({"token": expired, "action": "beat"}, 401)
    assert "not valid" in await refusal({"token": "not-a-token", "action": "admit"}, 401)
    assert "action" in await refusal({"token": token, "action": "launch"}, 400)
    assert "action" in await refusal({"token": token}, 400)
    assert "extra" in await refusal({"token": token, "action": "admit", "extra": 1}, 400)
    assert "body" in await refusal(b"{not json", 400, headers={"content-type": "application/json"})
    assert "application/json" in await refusal(b"token=x", 415, headers={"content-type": "text/plain"})
    huge = b'{"token": "' + b"a" * 10_000 + b'", "action": "admit"}'
    assert "at most" in await refusal(huge, 413, headers={"content-type": "application/json"})
    # A beat for a conversation that never started here.
    assert "Reload" in await refusal({"token": token, "action": "beat"}, 409)
    # A conversation that has ended cannot be admitted again: the page reads why it ended.
    assert (await ask(http, token))["go"]
    async with database(settings) as db:
        await budgets.end_conversation(db, conversation_id, "ops@example.com")
    assert await refusal({"token": token, "action": "admit"}, 409) == STOP_SENTENCES["ended_by_operator"]
    # Too many questions for one conversation.
    _, busy = iframe_page(server)
    statuses = [(await http.post(PATH, json={"token": busy, "action": "end"})).status_code for _ in range(14)]
    assert statuses[:10] == [200] * 10 and 429 in statuses


async def test_the_usage_figures_include_iframe_conversations_and_the_endpoint_is_documented(
    served: Served, http: httpx.AsyncClient
) -> None:
    server, _, settings = served
    await set_budget(settings, max_concurrent=3)
    await asyncio.sleep(CHECK)
    async with database(settings) as db:
        reader = await create_api_token(db, "budgets:read")
    _, token = iframe_page(server)
    assert (await ask(http, token))["go"]
    await asyncio.sleep(BEAT)
    assert (await ask(http, token, "beat"))["go"]
    report = await http.get("/api/v1/budgets", headers={"Authorization": f"Bearer {reader}"})
    (row,) = [flow for flow in report.json()["flows"] if flow["flow"] == "demo-iframe"]
    assert row["live"] == 1 and row["max_concurrent"] == 3  # (its minutes: see the test of counting)
    await ask(http, token, "end")
    report = await http.get("/api/v1/budgets", headers={"Authorization": f"Bearer {reader}"})
    (row,) = [flow for flow in report.json()["flows"] if flow["flow"] == "demo-iframe"]
    assert row["live"] == 0

    spec = (await http.get("/api/openapi.json")).json()
    operation = spec["paths"][PATH]["post"]
    errors = {status for status in operation["responses"] if status.startswith("4")}
    assert errors == {"400", "401", "404", "409", "413", "415", "429"}
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["action"]["enum"] == ["admit", "beat", "end"]
