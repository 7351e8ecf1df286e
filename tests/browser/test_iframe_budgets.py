"""Budgets on an Iframe-mode page in Chromium, with the real pinned Iframe SDK and the simulator's meeting:
a kill switch engaged mid-conversation ends the page's call with its sentence within about one heartbeat,
and a page refused at Start never loads the meeting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.models import Conversation
from server.page_budgets import heartbeat_interval
from server.settings import Settings
from tests.browser.conftest import PageWatch, iframe_call_under_way
from tests.support import (
    ServerThread,
    database,
    db_session,
    eventually,
    prepared_settings,
    run_async,
    stored_transcript,
)

CHECK = 0.5  # pages beat every 2.5 s
BEAT = heartbeat_interval(CHECK)


@pytest.fixture
def served(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, budget_check_seconds=CHECK)
    with ServerThread(create_app(settings)) as server:
        yield server, settings


def switch(settings: Settings, slug: str, engaged: bool) -> None:
    async def change() -> None:
        async with database(settings) as db:
            await budgets.set_switch(db, slug, engaged, "ops@example.com")

    run_async(change)


def conversation(settings: Settings, conversation_id: str) -> Conversation | None:
    async def read() -> Conversation | None:
        async with db_session(settings) as session:
            return await session.get(Conversation, conversation_id)

    return run_async(read)


def meetings(simulator: ServerThread) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = httpx.get(f"{simulator.url}/_sim/sessions").json()
    return [s for s in sessions if s["transport"] == "iframe"]


def test_a_kill_switch_ends_a_live_iframe_call_with_its_sentence_and_refuses_the_next_start(
    served: tuple[ServerThread, Settings], simulator: ServerThread, watch: PageWatch
) -> None:
    server, settings = served
    page = watch.page
    session_id = iframe_call_under_way(page, f"{server.url}/a/demo-iframe?first_name=Ana")
    live = meetings(simulator)[-1]
    assert not live["ended"]

    switch(settings, "demo-iframe", True)
    engaged = time.monotonic()
    status = page.locator("#status")
    expect(status).to_have_text(STOP_SENTENCES["kill_switch"], timeout=(BEAT + CHECK + 3) * 1000)
    took = time.monotonic() - engaged
    assert took <= BEAT + CHECK + 1.5, f"the page stopped {took:.1f} s after the switch"
    # The SDK's call ended: its meeting iframe is gone and the meeting's connection closed.
    expect(page.locator("#kaltura-avatar-iframe")).to_have_count(0)
    assert page.evaluate("window.avatarPage.state.phase") == "ended"
    eventually(lambda: meetings(simulator)[-1]["ended"], what="the meeting's end at the simulator")
    ended = conversation(settings, session_id)
    assert ended is not None and ended.end_reason == "kill_switch"
    # What was said before the stop is kept (the page flushes its lines before each beat).
    stored = [entry.text for entry in run_async(lambda: stored_transcript(settings, session_id))]
    assert stored[1] == "show me a table" and stored[2].startswith("Here is a table.")
    print(f"stopped {took:.2f} s after the switch (beat {BEAT} s)")

    # A new visitor is refused at Start with the same sentence, and the meeting never loads.
    count = len(meetings(simulator))
    page.goto(f"{server.url}/a/demo-iframe")
    page.get_by_role("button", name="Start conversation").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(STOP_SENTENCES["kill_switch"], timeout=10_000)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert page.locator("#kaltura-avatar-iframe").count() == 0
    page.wait_for_timeout(1000)
    assert len(meetings(simulator)) == count
    assert watch.violations() == []
    assert watch.console_errors == []
