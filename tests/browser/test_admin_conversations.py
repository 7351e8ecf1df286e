"""In Chromium: a visitor talks to the demo avatar and ends the call; an admin then sees it on the overview
(Chart.js drawn under the strict CSP) and reads its transcript and diagnostics timeline."""

from __future__ import annotations

from playwright.sync_api import expect

from server.settings import Settings
from tests.admin.console_client import create_admin
from tests.browser.conftest import PageWatch
from tests.browser.console_checks import sign_in
from tests.support import ServerThread


def test_a_visitors_call_shows_on_the_overview_and_its_timeline(
    demo: tuple[ServerThread, Settings], watch: PageWatch
) -> None:
    server, settings = demo
    page = watch.page
    page.goto(f"{server.url}/a/demo?first_name=Ana")
    page.get_by_role("button", name="Start conversation").click()
    expect(page.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
    conversation_id = page.evaluate(
        "JSON.parse(document.getElementById('avatar-config').textContent).session.id"
    )
    page.get_by_role("button", name="End conversation").click()
    expect(page.locator("#status")).to_contain_text("You ended the conversation", timeout=10_000)

    create_admin(settings, "ops@example.com")
    sign_in(page, f"{server.url}/admin", "ops@example.com")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    drawn = "(id) => !!(window.Chart && window.Chart.getChart(document.getElementById(id)))"
    page.wait_for_function(drawn, arg="chart-conversations")  # the scripts run after the page is shown
    page.wait_for_function(drawn, arg="chart-minutes")
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    page.set_viewport_size({"width": 360, "height": 800})
    # Phone width: no horizontal scroll (wide tables scroll in their box; the charts follow their box).
    page.wait_for_function(fits, timeout=5_000)
    page.screenshot(path=str(settings.data_dir / "overview-360.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    totals = page.get_by_role("table", name="Totals per flow")
    expect(totals.get_by_role("row").filter(has_text="demo").first).to_contain_text("1")

    page.get_by_role("link", name="Conversations").click()
    page.locator(f'a[href="/admin/conversations/{conversation_id}"]').click()
    timeline = page.locator("#timeline + *")
    for kind in ("relay_connect", "upstream_connect", "whep", "end"):
        expect(timeline).to_contain_text(kind, timeout=10_000)
    for _ in range(20):  # the page's end report is sent with its final transcript flush
        if "page_end" in (page.locator("#timeline + *").text_content() or ""):
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(timeline.locator("tr", has_text="page_end")).to_contain_text("visitor_ended")
    expect(page.locator(".facts")).to_contain_text("Visitor ended")
    expect(page.locator(".transcript-lines")).to_contain_text("Hello Ana!")
    page.set_viewport_size({"width": 360, "height": 800})
    page.wait_for_function(fits, timeout=5_000)
    page.screenshot(path=str(settings.data_dir / "conversation-360.png"), full_page=True)

    assert watch.violations() == []
    assert watch.console_errors == []
