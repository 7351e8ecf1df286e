"""Headless Debian Chromium driven by Playwright (no browser download), with the pinned Kaltura SDK.

The SDK's CDN is unreachable from test machines, so a route answers the exact pinned URL with the verified
bytes from `avatar-bff vendor-sdk`'s cache — the browser still checks the integrity hash.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from server.app import create_app
from server.sdk import PINS, SdkError, SdkPin, fetch_pinned
from server.settings import Settings
from server.simulator import SimulatorConfig
from server.simulator import create_app as create_simulator
from tests.support import ServerThread, free_port, prepared_settings

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Plain host candidates, so aiortc on this machine can reach Chromium without resolving mDNS names.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

# The loudest sample an element's audio tracks play over `rounds` times 50 ms (-1: no audio track there).
AUDIO_PEAK = """async ([selector, rounds]) => {
  const element = document.querySelector(selector);
  const tracks = element && element.srcObject ? element.srcObject.getAudioTracks() : [];
  if (!tracks.length) return -1;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  context.createMediaStreamSource(new MediaStream(tracks)).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let peak = 0;
  for (let i = 0; i < rounds; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    analyser.getFloatTimeDomainData(samples);
    for (const s of samples) peak = Math.max(peak, Math.abs(s));
  }
  return peak;
}"""
AVATAR_VIDEO = "#avatar-container video"  # WHEP: the avatar's voice comes with its video
FALLBACK_AUDIO = "body > audio"  # the SDK's audio-fallback peer plays here


def audio_peak(page: Page, selector: str, rounds: int = 40) -> float:
    peak: float = page.evaluate(AUDIO_PEAK, [selector, rounds])
    return peak


# From now on, remember each of these SDK events the page's SDK emits, with its data: see `sdk_events`.
RECORD_SDK_EVENTS = """(names) => {
  window.__sdkEvents = [];
  for (const name of names) {
    window.avatarPage.sdk.on(name, (data) => window.__sdkEvents.push([name, data || null]));
  }
}"""


def record_sdk_events(page: Page, names: list[str]) -> None:
    page.evaluate(RECORD_SDK_EVENTS, names)


def recorded_sdk_events(page: Page) -> list[tuple[str, Any]]:
    """[(event name, data)] in the order the SDK emitted them, since `record_sdk_events`."""
    found: list[list[Any]] = page.evaluate("() => window.__sdkEvents")
    return [(name, data) for name, data in found]


RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample});
});
"""


# Module scope: Playwright's sync API runs an event loop in the main thread while it lives, which
# would break asyncio.run() in the tests that follow.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def sdk_files() -> dict[str, tuple[SdkPin, bytes]]:
    try:
        return {
            pin.mode: (pin, fetch_pinned(pin)) for (version, _), pin in PINS.items() if version == "v2.7.4"
        }
    except SdkError as exc:
        pytest.skip(
            f"the pinned Kaltura SDK is not available offline (run avatar-bff vendor-sdk once): {exc}"
        )


@dataclass
class PageWatch:
    """A page plus what it complained about: CSP violations, console errors, third-party requests."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def violations(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.page.evaluate("window.__cspViolations || []")
        return found


def _serve_pinned(body: bytes) -> Callable[[Route], None]:
    headers = {"content-type": "application/javascript; charset=utf-8", "access-control-allow-origin": "*"}

    def handle(route: Route) -> None:
        route.fulfill(status=200, body=body, headers=headers)

    return handle


@pytest.fixture
def context(browser: Browser, sdk_files: dict[str, tuple[SdkPin, bytes]]) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.add_init_script(RECORD_VIOLATIONS)
    for pin, data in sdk_files.values():
        ctx.route(pin.cdn_url, _serve_pinned(data))
    yield ctx
    ctx.close()


@pytest.fixture
def watch(context: BrowserContext) -> PageWatch:
    page = context.new_page()
    watched = PageWatch(page)
    page.on("console", lambda msg: watched.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watched.console_errors.append(f"uncaught: {exc}"))
    page.on("request", lambda request: watched.requests.append(request.url))
    return watched


@pytest.fixture(scope="module")
def simulator() -> Iterator[ServerThread]:
    """The project's upstream simulator, in process on loopback."""
    port = free_port()  # chosen first: the simulator names its own public URL in webrtc_url and talk_url
    config = SimulatorConfig(public_url=f"http://127.0.0.1:{port}")
    with ServerThread(create_simulator(config), port=port) as server:
        yield server


@pytest.fixture
def demo(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, Settings]]:
    """The app with its demo flows, talking to `simulator`."""
    settings = prepared_settings(tmp_path, simulator_url=simulator.url)
    with ServerThread(create_app(settings)) as server:
        yield server, settings


def iframe_call_under_way(page: Page, url: str) -> str:
    """Open `url` (an Iframe-mode page), start, join the meeting, hear the greeting and have a typed question
    answered; the conversation's id."""
    page.goto(url)
    session_id: str = page.evaluate(
        "JSON.parse(document.getElementById('avatar-config').textContent).session.id"
    )
    page.get_by_role("button", name="Start conversation").click()
    meeting = page.frame_locator("#kaltura-avatar-iframe")
    meeting.get_by_role("button", name="Join the conversation").click()
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("Hello Ana!", timeout=30_000)  # the injected DPP was applied
    meeting.get_by_label("Type to the avatar").fill("show me a table")
    meeting.get_by_role("button", name="Send").click()
    expect(transcript).to_contain_text("Here is a table.", timeout=30_000)
    return session_id
