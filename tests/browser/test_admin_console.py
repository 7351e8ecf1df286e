"""The admin console in Chromium: every page reachable from the overview is clean (CSP, console, axe-core,
phone width), for an admin and for a viewer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.app import create_app
from server.settings import Settings
from tests.admin.console_client import create_admin
from tests.browser.conftest import PageWatch
from tests.browser.console_checks import check_page, crawl_console, sign_in
from tests.support import ServerThread


@pytest.fixture
def console(settings: Settings) -> Iterator[ServerThread]:
    create_admin(settings, "admin@example.com")
    create_admin(settings, "viewer@example.com", role="viewer")
    with ServerThread(create_app(settings)) as server:
        yield server


def test_sign_in_page_is_clean(console: ServerThread, watch: PageWatch) -> None:
    check_page(watch, f"{console.url}/admin/sign-in")
    watch.page.get_by_label("Email").fill("nobody@example.com")
    watch.page.get_by_label("Password").fill("wrong password, twelve+")
    watch.page.get_by_role("button", name="Sign in").click()
    assert watch.page.get_by_role("alert").inner_text() == "The email or password is wrong."


@pytest.mark.parametrize("email", ["admin@example.com", "viewer@example.com"])
def test_every_console_page_is_clean(console: ServerThread, watch: PageWatch, email: str) -> None:
    sign_in(watch.page, f"{console.url}/admin", email)
    watch.page.wait_for_url(f"{console.url}/admin")
    visited = crawl_console(watch, f"{console.url}/admin")
    for section in ("flows", "templates", "conversations", "tokens", "audit"):
        assert any(url.startswith(f"{console.url}/admin/{section}") for url in visited), (section, visited)
    # The navigation is the same everywhere, by its visible names.
    nav = watch.page.get_by_role("navigation", name="Console")
    for name in ("Flows", "Templates", "Conversations", "API tokens", "Audit log"):
        assert nav.get_by_role("link", name=name).is_visible()
