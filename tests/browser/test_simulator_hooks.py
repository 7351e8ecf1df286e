"""The simulator's test hooks as the real Socket SDK hears them on /a/demo: its own events and GenUI, so the
hooks' event names and payloads are the SDK's (the page's own handling of each state is tested elsewhere)."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Page, expect

from server.settings import Settings
from tests.browser.conftest import PageWatch, record_sdk_events, recorded_sdk_events
from tests.support import ServerThread, eventually

EVENTS = ["user-speaking-start", "user-speech", "time-warning", "avatar-speech"]
LONG = " ".join(["a long sentence"] * 60)


def sdk_events(page: Page, name: str) -> list[Any]:
    return [data for event, data in recorded_sdk_events(page) if event == name]


def test_the_real_sdk_understands_every_hook(
    demo: tuple[ServerThread, Settings],
    simulator: ServerThread,
    watch: PageWatch,
) -> None:
    server, _ = demo
    page = watch.page
    page.goto(f"{server.url}/a/demo?first_name=Ana")
    page.get_by_role("button", name="Start conversation").click()
    expect(page.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
    record_sdk_events(page, EVENTS)
    session = httpx.get(f"{simulator.url}/_sim/sessions").json()[-1]["id"]

    def hook(name: str, body: dict[str, Any]) -> None:
        httpx.post(f"{simulator.url}/_sim/sessions/{session}/{name}", json=body).raise_for_status()

    def avatar_said(start: str) -> str:
        return str(
            eventually(
                lambda: next(
                    (d["text"] for d in sdk_events(page, "avatar-speech") if d["text"].startswith(start)), ""
                ),
                bool,
                timeout=30,
                what=f"the avatar saying {start!r}…",
            )
        )

    hook("hear", {"text": "show me a chart"})
    avatar_said("Here is a chart.")
    speech = sdk_events(page, "user-speech")
    assert {"text": "show me", "isFinal": False} in speech  # interim words, then the final turn
    assert speech[-1] == {"text": "show me a chart", "isFinal": True}
    assert sdk_events(page, "user-speaking-start")

    hook("time-warning", {"remaining_seconds": 30})
    eventually(lambda: sdk_events(page, "time-warning"), bool, what="the SDK's time-warning")
    assert sdk_events(page, "time-warning") == [{"remainingSeconds": 30}]

    # GenUI: showCode draws its question; a hide closes a contact form but not sticky content.
    hook("genui", {"show": "showCode"})
    expect(page.locator(".kav-genui__code-question")).to_have_text("What does greet('Ana') return?")
    hook("genui", {"show": "contactCollector"})
    contact = page.locator(".kav-genui__contact")
    expect(contact).to_be_visible()
    hook("genui", {"hide": "hideCode"})
    expect(contact).to_have_count(0)
    hook("genui", {"show": "showLatex"})
    expect(page.locator(".katex").first).to_be_visible()
    hook("genui", {"hide": "hideCode"})
    page.wait_for_timeout(300)  # a hide that worked would have removed it by now
    expect(page.locator(".katex").first).to_be_visible()
    # Barge-in: typing while the avatar talks (the SDK's isSpeechStart first) cuts it short.
    hook("say", {"text": LONG})
    eventually(lambda: page.evaluate("() => window.avatarPage.sdk.isAvatarSpeaking()"), bool, timeout=30)
    page.get_by_label("Type a message").fill("stop please")
    page.get_by_role("button", name="Send").click()
    cut = avatar_said("a long")
    assert 0 < len(cut) < len(LONG) // 2
    avatar_said("You said: stop please.")  # then its answer to what was typed

    assert watch.violations() == []
