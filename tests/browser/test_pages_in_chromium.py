"""Both hosted pages in real Chromium: no CSP violations, no stray console errors, fine at phone width."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from server.sdk import SdkPin
from server.settings import Settings
from tests.browser.conftest import PageWatch
from tests.support import ServerThread

# With no simulator listening, the only acceptable errors report that: the relay's refusal (Socket SDK) and
# its 502 for the assets request (Iframe SDK).
UNREACHABLE = re.compile(r"avatar service is unreachable|status of 502 \(Bad Gateway\)")


def unexpected(errors: list[str]) -> list[str]:
    return [e for e in errors if not UNREACHABLE.search(e)]


@pytest.mark.parametrize("slug", ["demo", "demo-iframe"])
def test_page_loads_the_sdk_under_csp_and_explains_an_unreachable_service(
    live_server: ServerThread, watch: PageWatch, slug: str
) -> None:
    page = watch.page
    page.goto(f"{live_server.url}/a/{slug}")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.KalturaAvatarSDK") == "function"
    assert page.evaluate("typeof window.avatarPage") == "object"  # our module ran
    assert watch.violations() == []
    assert watch.console_errors == []

    page.get_by_role("button", name="Start conversation").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=20_000)
    # Socket pages show the relay's own reason for refusing; iframe pages, that the service is unreachable.
    reason = "avatar service is unreachable" if slug == "demo" else "cannot reach the avatar service"
    assert reason in alert.inner_text()
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    if slug == "demo":
        # A refusal cannot change by itself: the SDK does not retry behind the visitor's back (its first
        # retry would come after about a second).
        handshakes = len(socket_handshakes(watch.requests))
        page.wait_for_timeout(2500)
        assert len(socket_handshakes(watch.requests)) == handshakes
        expect(page.locator("#status")).to_have_text("Not connected.")
    # Retry starts a fresh SDK: the iframe SDK's failed instance would stay in `error` and do nothing.
    page.evaluate("document.getElementById('error').hidden = true")
    retry.click()
    alert.wait_for(state="visible", timeout=20_000)
    assert reason in alert.inner_text()
    assert watch.violations() == []
    assert unexpected(watch.console_errors) == []


def socket_handshakes(urls: list[str]) -> list[str]:
    return [url for url in urls if "/socket.io/" in url and "transport=polling" in url and "sid=" not in url]


def test_self_hosted_sdk_never_touches_the_cdn(
    live_server: ServerThread,
    settings: Settings,
    watch: PageWatch,
    sdk_files: dict[str, tuple[SdkPin, bytes]],
) -> None:
    for pin, data in sdk_files.values():
        target = settings.sdk_dir / pin.version / pin.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for slug in ("demo", "demo-iframe"):
        watch.page.goto(f"{live_server.url}/a/{slug}")
        watch.page.wait_for_load_state("networkidle")
        assert watch.page.evaluate("typeof window.KalturaAvatarSDK") == "function"
    assert [url for url in watch.requests if not url.startswith(live_server.url)] == []
    assert watch.violations() == [] and watch.console_errors == []


def test_page_works_at_phone_width_and_by_keyboard(live_server: ServerThread, watch: PageWatch) -> None:
    page = watch.page
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{live_server.url}/a/demo")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.get_by_role("status").inner_text() == "Ready to start."
    assert page.get_by_role("heading", name="Transcript").is_visible()
    assert page.get_by_label("Type a message").is_disabled()  # enabled once the conversation runs
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "start"
