"""Checks every admin console page gets in Chromium: no CSP violation, no console error, no serious or
critical axe-core finding, no horizontal scroll at phone width. axe-core comes from npm (`make setup`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.admin.console_client import PASSWORD
from tests.browser.conftest import PageWatch

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")
# Links a crawl must not follow: files to download, and pages that act (none should act on GET, but a crawl
# of everything would also sign out).
SKIP = ("/download", ".json", ".md", ".txt", "/sign-out")


def sign_in(page: Page, url: str, email: str) -> None:
    """Open `url`, a console page, and sign in as `email` on the form it shows first."""
    page.goto(url)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def axe_source() -> str:
    if not AXE.exists():
        pytest.skip("axe-core is not installed (make setup runs npm ci)")
    return AXE.read_text()


def serious_axe_findings(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now.

    Evaluated through the DevTools protocol, so the page's CSP (no inline script) does not block it.
    """
    page.evaluate(axe_source())
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]


def check_page(watch: PageWatch, url: str) -> list[str]:
    """Open `url` at desktop and phone width; return the same-origin console links it shows."""
    page = watch.page
    page.set_viewport_size({"width": 1280, "height": 900})
    answer = page.goto(url)
    assert answer is not None and answer.status < 400, (url, answer and answer.status)
    page.wait_for_load_state("networkidle")
    assert watch.violations() == [], (url, watch.violations())
    assert watch.console_errors == [], (url, watch.console_errors)
    assert serious_axe_findings(page) == [], url
    page.set_viewport_size({"width": 360, "height": 740})
    with contextlib.suppress(PlaywrightTimeout):  # charts follow their box a frame or two later
        page.wait_for_function("() => document.documentElement.scrollWidth <= 360", timeout=3000)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 360, (url, f"scrolls sideways at 360 px: {overflow} px wide")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    hrefs: list[str] = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    found = []
    for href in hrefs:
        absolute = urljoin(url, href).split("#")[0]
        if absolute.startswith(f"{origin}/admin") and not any(part in absolute for part in SKIP):
            found.append(absolute)
    return found


def crawl_console(watch: PageWatch, start: str, limit: int = 40) -> list[str]:
    """Check every console page reachable by links from `start` (GET only), up to `limit` pages."""
    seen: list[str] = []
    queue = [start]
    while queue and len(seen) < limit:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.append(url)
        queue.extend(link for link in check_page(watch, url) if link not in seen)
    return seen
