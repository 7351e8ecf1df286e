"""A whole conversation in Chromium on /a/demo: the real Socket SDK, our relay, the simulator upstream."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from server.sdk import PINS
from server.settings import Settings
from server.simulator.iframe import pronunciation_score
from tests.browser.conftest import AVATAR_VIDEO, PageWatch, audio_peak, iframe_call_under_way
from tests.support import (
    ServerThread,
    eventually,
    run_async,
    stored_transcript,
)

VIDEO_IS_DRAWN = """() => {
  const video = document.querySelector('#avatar-container video');
  if (!video || video.videoWidth === 0) return false;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < pixels.length; i += 4) if (pixels[i] + pixels[i + 1] + pixels[i + 2] > 60) lit++;
  return lit > pixels.length / 40;
}"""


def wait_for_transcript(
    settings: Settings, session_id: str, count: int, sources: int = 1
) -> list[tuple[str, str, tuple[str, ...]]]:
    """The canonical transcript once it has `count` lines, each from `sources` sources (both write async)."""

    async def stored() -> list[tuple[str, str, tuple[str, ...]]]:
        return [(e.role, e.text, e.sources) for e in await stored_transcript(settings, session_id)]

    return eventually(
        lambda: run_async(stored),
        lambda lines: len(lines) >= count and all(len(s) >= sources for _, _, s in lines),
        interval=0.3,
        what=f"{count} transcript lines from {sources} source(s)",
    )


def test_conversation_through_the_relay(
    demo: tuple[ServerThread, Settings], simulator: ServerThread, watch: PageWatch
) -> None:
    server, settings = demo
    page = watch.page
    response = page.goto(f"{server.url}/a/demo?first_name=Ana")
    assert response is not None
    source = response.text()
    assert "demo-client" not in source and "demo-flow" not in source  # the real ids stay on the server
    page.get_by_role("button", name="Start conversation").click()
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("Hello Ana!", timeout=30_000)  # the DPP arrived before the greeting
    page.wait_for_function(VIDEO_IS_DRAWN, timeout=15_000)  # the simulator's face, not a black frame

    page.get_by_label("Type a message").fill("show me a chart")
    page.get_by_role("button", name="Send").click()
    expect(transcript).to_contain_text("show me a chart", timeout=15_000)
    expect(transcript).to_contain_text("Here is a chart.", timeout=30_000)
    expect(page.locator("canvas").first).to_be_visible(timeout=15_000)  # Chart.js from /static/vendor

    page.get_by_label("Type a message").fill("bye")
    page.get_by_role("button", name="Send").click()
    assert audio_peak(page, AVATAR_VIDEO) > 0.01  # the closing sentence is heard over WebRTC
    expect(transcript).to_contain_text("Ending call now.", timeout=30_000)
    expect(page.locator("#status")).to_contain_text("ended", timeout=15_000)

    assert watch.violations() == []
    elsewhere = {url for url in watch.requests if not url.startswith(server.url)}
    assert elsewhere <= {pin.cdn_url for pin in PINS.values()}  # only the pinned SDK file, by default

    upstream = httpx.get(f"{simulator.url}/_sim/sessions").json()[-1]
    assert (upstream["client_id"], upstream["flow_id"]) == ("demo-client", "demo-flow")
    assert upstream["dpp"]["user"]["first_name"] == "Ana"

    # The API's transcript: every line once, in order, reported by both the page and the relay tap.
    session_id = page.evaluate("JSON.parse(document.getElementById('avatar-config').textContent).session.id")
    lines = wait_for_transcript(settings, session_id, 5, sources=2)
    assert [role for role, _, _ in lines] == ["Avatar", "User", "Avatar", "User", "Avatar"]
    assert [text for _, text, _ in lines][1::2] == ["show me a chart", "bye"]
    assert all(sources == ("page", "relay") for _, _, sources in lines)


def test_iframe_conversation_reaches_the_transcript_through_the_page(
    demo: tuple[ServerThread, Settings], watch: PageWatch
) -> None:
    server, settings = demo
    page = watch.page
    session_id = iframe_call_under_way(page, f"{server.url}/a/demo-iframe?first_name=Ana")
    meeting, transcript = page.frame_locator("#kaltura-avatar-iframe"), page.locator("#transcript")
    meeting.get_by_label("Type to the avatar").fill("bye")
    meeting.get_by_role("button", name="Send").click()
    expect(transcript).to_contain_text("Ending call now.", timeout=30_000)
    expect(page.locator("#status")).to_contain_text("ended", timeout=15_000)
    assert watch.violations() == []

    lines = wait_for_transcript(settings, session_id, 5)
    assert [role for role, _, _ in lines] == ["Avatar", "User", "Avatar", "User", "Avatar"]
    assert lines[1][1] == "show me a table" and all(sources == ("page",) for _, _, sources in lines)

    # The meeting scored each typed line; the page stored each score on its own User line.
    async def scores() -> list[int | None]:
        return [e.pronunciation_score for e in await stored_transcript(settings, session_id)]

    expected = [pronunciation_score("show me a table"), pronunciation_score("bye")]
    assert run_async(scores) == [None, expected[0], None, expected[1], None]
