"""The iframe simulator's meeting page tells the real Iframe SDK of failures on request, by its names."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect

from server.settings import Settings
from tests.browser.conftest import PageWatch, record_sdk_events, recorded_sdk_events
from tests.support import ServerThread, eventually


def test_the_meeting_posts_permissions_denied_and_load_agent_error_to_the_iframe_sdk(
    demo: tuple[ServerThread, Settings],
    simulator: ServerThread,
    watch: PageWatch,
) -> None:
    server, _ = demo
    page = watch.page
    page.goto(f"{server.url}/a/demo-iframe?first_name=Ana")
    page.get_by_role("button", name="Start conversation").click()
    page.frame_locator("#kaltura-avatar-iframe").get_by_role("button", name="Join the conversation").click()
    expect(page.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
    record_sdk_events(page, ["permissions-denied", "load-agent-error"])
    sessions: list[dict[str, Any]] = httpx.get(f"{simulator.url}/_sim/sessions").json()
    meeting = next(s["id"] for s in reversed(sessions) if s["transport"] == "iframe")
    for event in ("permissions-denied", "load-agent-error"):
        answer = httpx.post(f"{simulator.url}/_sim/meetings/{meeting}/emit", json={"event": event})
        assert answer.json() == {"ok": True}
    eventually(
        lambda: [name for name, _ in recorded_sdk_events(page)],
        lambda seen: seen == ["permissions-denied", "load-agent-error"],
        what="the Iframe SDK's events",
    )
    assert watch.violations() == []
