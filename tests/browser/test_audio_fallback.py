"""The real Socket SDK's audio fallback against the simulator: no video, the avatar heard and talking."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from server.settings import Settings
from tests.browser.conftest import FALLBACK_AUDIO, PageWatch, audio_peak
from tests.support import ServerThread


def test_without_video_the_sdk_falls_back_to_audio_and_the_conversation_goes_on(
    demo: tuple[ServerThread, Settings],
    simulator: ServerThread,
    watch: PageWatch,
) -> None:
    server, _ = demo
    media = f"{simulator.url}/_sim/media"
    httpx.post(media, json={"video": False, "flow_id": "demo-flow"}).raise_for_status()
    try:
        page = watch.page
        page.goto(f"{server.url}/a/demo?first_name=Ana")
        page.get_by_role("button", name="Start conversation").click()
        # The SDK approves (and the service greets) only once the fallback peer has the avatar's track.
        expect(page.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
        page.get_by_label("Type a message").fill("tell me something long enough to hear")
        page.get_by_role("button", name="Send").click()
        assert audio_peak(page, FALLBACK_AUDIO, 60) > 0.01  # heard over the fallback peer
        upstream = httpx.get(f"{simulator.url}/_sim/sessions").json()[-1]
        events = [(e["dir"], e["event"]) for e in upstream["events"]]
        assert ("in", "whep-offer") in events and ("in", "webrtc-create-offer") in events
        assert ("out", "webrtc-offer") in events and ("in", "webrtc-answer") in events
    finally:
        httpx.post(media, json={"video": True, "flow_id": "demo-flow"})
