"""The console's flows, API tokens and audit log in Chromium: forms by their labels, copy buttons, the hosted
page in a new tab, no CSP violation or console error, and no sideways scrolling at phone width."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from server.app import create_app
from tests.admin.console_client import create_admin
from tests.browser.conftest import PageWatch
from tests.browser.console_checks import sign_in
from tests.support import ServerThread, prepared_settings


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[str]:
    settings = prepared_settings(tmp_path)
    create_admin(settings, "admin@example.com")
    with ServerThread(create_app(settings)) as server:
        yield server.url


def clean(watch: PageWatch, refused: bool = False) -> None:
    """The page as it stands: no CSP violation, no console error, nothing wider than the viewport.

    A form refused is answered 400 by design, which Chromium reports as a console error: `refused` allows it.
    """
    page = watch.page
    errors = [e for e in watch.console_errors if not (refused and "status of 400" in e)]
    assert watch.violations() == [] and errors == [], page.url
    watch.console_errors.clear()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] if page.viewport_size else True, (page.url, width)


def sign_in_to_flows(page: Page, base: str) -> None:
    sign_in(page, f"{base}/admin/flows", "admin@example.com")
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()


def test_an_admin_creates_a_flow_copies_its_link_opens_it_makes_a_token_and_reads_the_log(
    console_url: str, context: BrowserContext, watch: PageWatch
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_url)
    page = watch.page
    page.set_viewport_size({"width": 360, "height": 800})
    sign_in_to_flows(page, console_url)
    clean(watch)

    page.get_by_role("link", name="New flow").click()
    expect(page.get_by_role("heading", name="New flow")).to_be_visible()
    clean(watch)
    page.get_by_label("Address (slug)").fill("acme")
    page.get_by_label("Display name").fill("<b>Acme</b> helper")
    page.get_by_label("Client id").fill("acme-client-7f3a91c2")
    page.get_by_label("Flow id").fill("acme-flow-0b5e44d9")
    page.get_by_label("Upstream").select_option("simulator")
    page.get_by_label("DPP template").select_option("demo-welcome")
    page.get_by_label("Allowed origins").fill("not an origin")
    page.get_by_role("button", name="Create flow").click()
    expect(page.locator("#e-allowed_origins")).to_contain_text("is not an origin")
    expect(page.get_by_label("Display name")).to_have_value("<b>Acme</b> helper")
    clean(watch, refused=True)
    page.get_by_label("Allowed origins").fill("")
    page.get_by_role("button", name="Create flow").click()

    expect(page.get_by_role("heading", name="<b>Acme</b> helper")).to_be_visible()
    clean(watch)
    page.get_by_role("button", name="Copy link").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == f"{console_url}/a/acme"
    with context.expect_page() as opened:
        page.get_by_role("link", name="Open page").click()
    hosted = opened.value
    hosted.wait_for_load_state()
    assert hosted.url == f"{console_url}/a/acme"
    assert "<b>Acme</b> helper" in hosted.title()
    hosted.close()

    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
    clean(watch)
    page.get_by_label("Name").fill("crm-export")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token “crm-export” created")).to_be_visible()
    clean(watch)
    page.get_by_role("button", name="Copy token").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("abff_")
    page.get_by_role("link", name="Done").click()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke crm-export").click()
    expect(page.get_by_text("Token revoked")).to_be_visible()
    clean(watch)

    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    clean(watch)
    expect(page.locator(".audit-head").first).to_contain_text("revoke token crm-export")
    page.get_by_label("What").select_option("flow")
    page.get_by_label("Who").fill("admin@example.com")  # not the demo flows' seeding import
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".audit-head")).to_have_count(1)
    clean(watch)

    page.get_by_role("link", name="Flows").click()
    page.get_by_role("link", name="<b>Acme</b> helper", exact=True).click()
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading", name="Delete “<b>Acme</b> helper”?")).to_be_visible()
    clean(watch)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete flow").click()
    expect(page.get_by_text("Flow deleted")).to_be_visible()
    clean(watch)
