"""A Socket-mode conversation the server stops, on a flow whose SDK does not reconnect: the page still tells
its visitor why (the relay's refused reconnect is how it learns that otherwise)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.settings import Settings
from tests import factories
from tests.browser.conftest import PageWatch
from tests.support import ServerThread, database, prepared_settings, run_async, with_database

LOCAL_TURN = {"urls": ["stun:127.0.0.1:3478"], "iceTransportPolicy": "all"}  # as the demo flow's


@pytest.fixture
def served(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, budget_check_seconds=0.5)
    flow: dict[str, Any] = {
        "upstream": "simulator",
        "turn_override": LOCAL_TURN,
        "sdk_options": {"reconnect": {"auto": False}},
    }
    with_database(settings, lambda db: factories.create_flow(db, "steady", **flow))
    with ServerThread(create_app(settings)) as server:
        yield server, settings


def test_a_kill_switch_tells_a_visitor_whose_sdk_does_not_reconnect(
    served: tuple[ServerThread, Settings], watch: PageWatch
) -> None:
    server, settings = served
    page = watch.page
    page.goto(f"{server.url}/a/steady")
    page.get_by_role("button", name="Start conversation").click()
    status = page.locator("#status")
    expect(status).to_contain_text("In conversation", timeout=30_000)

    async def engage() -> None:
        async with database(settings) as db:
            await budgets.set_switch(db, "steady", True, "ops@example.com")

    run_async(engage)
    expect(page.locator("body")).to_contain_text(STOP_SENTENCES["kill_switch"], timeout=15_000)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert watch.violations() == []
