"""The admin console in Chromium: every page reachable from the overview is clean (CSP, console, axe-core,
phone width), for an admin and for a viewer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from server.app import create_app
from server.settings import Settings
from tests.admin.console_client import PASSWORD, create_admin
from tests.browser.conftest import PageWatch
from tests.browser.console_checks import check_page, crawl_console
from tests.support import ServerThread


@pytest.fixture
def console(settings: Settings) -> Iterator[ServerThread]:
    create_admin(settings, "admin@example.com")
    create_admin(settings, "viewer@example.com", role="viewer")
    with ServerThread(create_app(settings)) as server:
        yield server


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/admin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/admin")


def test_sign_in_page_is_clean(console: ServerThread, watch: PageWatch) -> None:
    check_page(watch, f"{console.url}/admin/sign-in")
    watch.page.get_by_label("Email").fill("nobody@example.com")
    watch.page.get_by_label("Password").fill("wrong password, twelve+")
    watch.page.get_by_role("button", name="Sign in").click()
    assert watch.page.get_by_role("alert").inner_text() == "The email or password is wrong."


@pytest.mark.parametrize("email", ["admin@example.com", "viewer@example.com"])
def test_every_console_page_is_clean(console: ServerThread, watch: PageWatch, email: str) -> None:
    sign_in(watch.page, console.url, email)
    visited = crawl_console(watch, f"{console.url}/admin")
    for section in ("flows", "templates", "conversations", "tokens", "audit"):
        assert any(url.startswith(f"{console.url}/admin/{section}") for url in visited), (section, visited)
    # The navigation is the same everywhere, by its visible names.
    nav = watch.page.get_by_role("navigation", name="Console")
    for name in ("Flows", "Templates", "Conversations", "API tokens", "Audit log"):
        assert nav.get_by_role("link", name=name).is_visible()
