"""Every visitor state of the issue "SDK fidelity", reached through the simulator's `/_sim/…` hooks on the
real pinned SDKs and screenshotted at desktop and phone width (PNGs in the test's tmp dir): the avatar
speaking, the visitor's interim speech, time remaining, a voice turn with barge-in; audio only with the
microphone denied;
the queue (the relay's own, answered until a slot frees; the service's, until the flow's limit) and capacity
refusals; the Iframe SDK's permissions-denied and load-agent-error. Several states share one conversation.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from server.app import create_app
from server.settings import Settings
from tests.browser.conftest import PageWatch
from tests.browser.test_conversation import wait_for_transcript
from tests.browser.test_sdk_fidelity import (  # noqa: F401 - fixtures
    MIC_DENIED,
    add_flow,
    screenshots,
    server,
    sim_session,
    simulator,
    start,
)
from tests.support import ServerThread, prepared_settings

LONG = " ".join(["the avatar goes on talking"] * 30)
SPOKEN = "could you please tell me which of your plans suits a small team"


def hook(sim: ServerThread, session: str, name: str, body: dict[str, Any] | None = None) -> None:
    answer = httpx.post(f"{sim.url}/_sim/sessions/{session}/{name}", json=body or {})
    assert answer.status_code == 200, answer.text


def entries(page: Page) -> list[tuple[str, str]]:
    found: list[list[str]] = page.evaluate(
        """() => [...document.querySelectorAll('#transcript li')].map(
          (li) => [li.querySelector('.role').textContent, li.querySelector('p').textContent])"""
    )
    return [(role, text) for role, text in found]


def test_speaking_interim_speech_time_remaining_and_a_voice_turn_with_barge_in(
    server: tuple[ServerThread, Settings],  # noqa: F811
    simulator: ServerThread,  # noqa: F811
    watch: PageWatch,
    tmp_path: Path,
) -> None:
    running, settings = server
    add_flow(settings, "voice")
    page = watch.page
    start(page, f"{running.url}/a/voice")
    transcript = page.locator("#transcript")
    expect(transcript.locator("li")).to_have_count(1, timeout=30_000)  # the greeting
    session = sim_session(simulator)
    session_id = page.evaluate("JSON.parse(document.getElementById('avatar-config').textContent).session.id")

    hook(simulator, session, "time-warning", {"remaining_seconds": 125})
    expect(page.locator("#remaining")).to_contain_text("Time remaining: 2 min")
    hook(simulator, session, "say", {"text": LONG})
    expect(page.locator("#speaking")).to_be_visible(timeout=15_000)
    expect(page.locator("#speaking")).to_have_text("Avatar speaking")
    screenshots(page, tmp_path, "avatar-speaking")

    # The visitor talks over the avatar: it stops, the words so far show, then the turn and the answer.
    hook(simulator, session, "hear", {"text": SPOKEN})
    interim = page.locator("#interim")
    expect(interim).to_contain_text("You: could you please", timeout=10_000)
    expect(page.locator("#speaking")).to_be_hidden()  # barge-in: the avatar stopped
    screenshots(page, tmp_path, "interim-speech")
    expect(transcript.locator("li.user p")).to_have_text([SPOKEN], timeout=20_000)
    expect(interim).to_be_hidden()

    # Typing over the avatar's answer (the SDK's sendText opens with isSpeechStart) cuts it short too.
    expect(page.locator("#speaking")).to_be_visible(timeout=15_000)
    page.get_by_label("Type a message").fill("stop please")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#speaking")).to_be_hidden(timeout=10_000)
    expect(transcript.locator("li.user p")).to_have_text([SPOKEN, "stop please"], timeout=20_000)
    expect(transcript.locator("li.avatar")).to_have_count(4, timeout=30_000)  # greeting, 2 cut, answer

    lines = entries(page)
    assert [role for role, _ in lines] == ["Avatar", "Avatar", "You", "Avatar", "You", "Avatar"]
    answer = f"You said: {SPOKEN}. What else would you like to see?"
    for said, cut in ((LONG, lines[1][1]), (answer, lines[3][1])):
        assert said.startswith(cut) and 0 < len(cut) < len(said)  # the part said before the barge-in
    assert max(Counter(lines).values()) == 1  # nothing twice
    stored = wait_for_transcript(settings, session_id, 6, sources=2)
    roles = {"Avatar": "Avatar", "You": "User"}
    assert [(role, text) for role, text, _ in stored] == [(roles[role], text) for role, text in lines]
    assert watch.violations() == []


def test_audio_only_with_the_microphone_denied(
    server: tuple[ServerThread, Settings],  # noqa: F811
    simulator: ServerThread,  # noqa: F811
    watch: PageWatch,
    tmp_path: Path,
) -> None:
    running, settings = server
    add_flow(settings, "novideo")
    media = f"{simulator.url}/_sim/media"
    httpx.post(media, json={"video": False, "flow_id": "novideo-flow"}).raise_for_status()
    try:
        page = watch.page
        page.add_init_script(MIC_DENIED)
        start(page, f"{running.url}/a/novideo")
        notices = page.locator("#notices")
        expect(notices).to_contain_text("Video unavailable — audio only")
        expect(notices).to_contain_text("this is a text conversation: type below")
        expect(page.locator("#status")).to_have_text("In conversation. Type below.")
        expect(page.locator("#transcript li.avatar")).to_have_count(1, timeout=30_000)  # greeted, heard
        screenshots(page, tmp_path, "audio-only-text-only")
    finally:
        httpx.post(media, json={"video": True, "flow_id": "novideo-flow"})
    assert watch.violations() == []


def test_the_relays_queue_admits_the_visitor_when_a_slot_frees(
    tmp_path: Path,
    simulator: ServerThread,  # noqa: F811
    watch: PageWatch,
) -> None:
    """Defect 3 end to end: the relay at the flow's capacity queues the visitor, answers each poll, and lets
    them in as soon as the other call ends."""
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, relay_max_per_flow=1)
    add_flow(settings, "busy", sdk_options={"queue": {"max_wait_seconds": 120, "poll_seconds": [1]}})
    with ServerThread(create_app(settings)) as running:
        first = watch.page.context.new_page()  # takes the flow's only place
        start(first, f"{running.url}/a/busy")
        page = watch.page
        page.goto(f"{running.url}/a/busy")
        page.get_by_role("button", name="Start conversation").click()
        status = page.locator("#status")
        expect(status).to_contain_text("All avatars are busy: you are in the queue.", timeout=20_000)
        # A poll answered "still full": the SDK checks again (attempt 2 onwards say how long it waited).
        expect(status).to_contain_text(re.compile(r"Waited \d+ s; checking again in 1 s\."), timeout=10_000)
        expect(status).to_contain_text("We give up after 2 min.")
        screenshots(page, tmp_path, "queue-position")
        first.get_by_role("button", name="End conversation").click()
        expect(status).to_contain_text("In conversation", timeout=20_000)
        expect(page.locator("#transcript li.avatar")).to_have_count(1, timeout=30_000)  # greeted
        first.close()
    assert watch.violations() == []


def test_queue_time_out_and_capacity_refusals_say_why_and_offer_retry(
    server: tuple[ServerThread, Settings],  # noqa: F811
    simulator: ServerThread,  # noqa: F811
    watch: PageWatch,
    tmp_path: Path,
) -> None:
    """The service full (the simulator's admission hook): a queue that reaches the flow's limit, a flow
    without a queue, an account over its plan. Each says why, offers Retry, and does not retry by itself."""
    running, settings = server
    add_flow(settings, "patient", sdk_options={"queue": {"max_wait_seconds": 3, "poll_seconds": [1]}})
    add_flow(settings, "noqueue", sdk_options={"queue": {"enabled": False}})
    add_flow(settings, "overplan")
    admission = f"{simulator.url}/_sim/admission"
    modes = {"patient-flow": "full", "noqueue-flow": "full", "overplan-flow": "tier-exceeded"}
    for flow_id, mode in modes.items():
        httpx.post(admission, json={"mode": mode, "flow_id": flow_id}).raise_for_status()
    try:
        page = watch.page
        status, alert, retry = page.locator("#status"), page.get_by_role("alert"), page.locator("#retry")
        cases = [
            ("patient", "We waited too long for a free avatar."),
            ("noqueue", "All avatars are busy right now. Please try again in a few minutes."),
            ("overplan", "This site has used up its avatar minutes."),
        ]
        for slug, reason in cases:
            page.goto(f"{running.url}/a/{slug}")
            page.get_by_role("button", name="Start conversation").click()
            if slug == "patient":
                expect(status).to_contain_text("We give up after 3 s.", timeout=20_000)
            expect(alert).to_contain_text(reason, timeout=20_000)
            expect(status).to_have_text("Not connected.")
            expect(retry).to_be_visible()
            screenshots(page, tmp_path, f"refused-{slug}")
            page.wait_for_timeout(1500)  # the SDK's first reconnect (1 s ± 15 %) would have started
            expect(status).to_have_text("Not connected.")
            assert page.evaluate("window.avatarPage.sdk") is None
        # Room again: Retry connects.
        httpx.post(admission, json={"mode": "open", "flow_id": "overplan-flow"}).raise_for_status()
        retry.click()
        expect(status).to_contain_text("In conversation", timeout=30_000)
    finally:
        for flow_id in modes:
            httpx.post(admission, json={"mode": "open", "flow_id": flow_id})
    assert watch.violations() == []


def test_reconnecting_is_shown_while_the_sdk_tries(
    server: tuple[ServerThread, Settings],  # noqa: F811
    simulator: ServerThread,  # noqa: F811
    watch: PageWatch,
    tmp_path: Path,
) -> None:
    """Exhaustion and Retry: test_reconnect_exhaustion_offers_retry_and_retry_reconnects."""
    running, settings = server
    add_flow(settings, "wobbly", sdk_options={"reconnect": {"attempts": 3, "base_delay_ms": 1000}})
    page = watch.page
    start(page, f"{running.url}/a/wobbly")
    page.route("**/socket.io/**", lambda route: route.abort())
    hook(simulator, sim_session(simulator), "drop")
    status = page.locator("#status")
    expect(status).to_contain_text("Connection lost. Reconnecting (attempt", timeout=15_000)
    expect(status).to_contain_text("of 3)…")
    screenshots(page, tmp_path, "reconnecting")
    page.unroute("**/socket.io/**")
    expect(status).to_contain_text("In conversation", timeout=30_000)


def test_iframe_permissions_denied_and_load_agent_error_are_shown(
    server: tuple[ServerThread, Settings],  # noqa: F811
    simulator: ServerThread,  # noqa: F811
    watch: PageWatch,
    tmp_path: Path,
) -> None:
    running, settings = server
    add_flow(settings, "meeting", sdk_mode="iframe")
    page = watch.page
    page.goto(f"{running.url}/a/meeting")
    page.get_by_role("button", name="Start conversation").click()
    page.frame_locator("#kaltura-avatar-iframe").get_by_role("button", name="Join the conversation").click()
    expect(page.locator("#transcript li")).to_have_count(1, timeout=30_000)  # the greeting
    sessions: list[dict[str, Any]] = httpx.get(f"{simulator.url}/_sim/sessions").json()
    meeting = next(s["id"] for s in reversed(sessions) if s["transport"] == "iframe")

    def emit(event: str) -> None:
        answer = httpx.post(f"{simulator.url}/_sim/meetings/{meeting}/emit", json={"event": event})
        assert answer.json() == {"ok": True}

    emit("permissions-denied")
    expect(page.locator("#notices")).to_have_text(
        "Your microphone is off or blocked, so the avatar cannot hear you."
        " To talk, allow the microphone for this site and reload the page."
    )
    expect(page.locator("#status")).to_have_text("In conversation.")
    screenshots(page, tmp_path, "iframe-permissions-denied")
    emit("load-agent-error")
    expect(page.get_by_role("alert")).to_have_text("The avatar could not be loaded. Please try again.")
    expect(page.locator("#status")).to_have_text("Not connected.")
    expect(page.locator("#retry")).to_be_visible()
    screenshots(page, tmp_path, "iframe-load-agent-error")
    assert watch.violations() == []
