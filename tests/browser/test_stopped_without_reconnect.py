"""A Socket-mode conversation the server stops, on a flow whose SDK does not reconnect: the page still tells
its visitor why (the relay's refused reconnect is how it learns that otherwise)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.settings import Settings
from tests.browser.conftest import PageWatch
from tests.browser.test_sdk_fidelity import add_flow, start
from tests.support import ServerThread, database, prepared_settings, run_async


@pytest.fixture
def served(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, budget_check_seconds=0.5)
    add_flow(settings, "steady", sdk_options={"reconnect": {"auto": False}})
    with ServerThread(create_app(settings)) as server:
        yield server, settings


def test_a_kill_switch_tells_a_visitor_whose_sdk_does_not_reconnect(
    served: tuple[ServerThread, Settings], watch: PageWatch
) -> None:
    server, settings = served
    page = watch.page
    start(page, f"{server.url}/a/steady")

    async def engage() -> None:
        async with database(settings) as db:
            await budgets.set_switch(db, "steady", True, "ops@example.com")

    run_async(engage)
    expect(page.locator("body")).to_contain_text(STOP_SENTENCES["kill_switch"], timeout=15_000)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert watch.violations() == []
