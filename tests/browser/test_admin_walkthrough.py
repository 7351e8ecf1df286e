"""An admin's day in Chromium, end to end on the simulator: sign in, write a template (a mistake shown by its
line, then fixed), preview it with a sample visitor, save it, make a flow that uses it, hear the avatar
greet with the previewed name, try a draft through the preview link before publishing it, roll back, read the
history and the audit log, and open the conversation with its transcript and timeline. Every console page
visited has no CSP violation, no console error and no serious axe-core finding."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from server.app import create_app
from server.settings import Settings
from tests.admin.console_client import create_admin
from tests.browser.conftest import PageWatch
from tests.browser.console_checks import serious_axe_findings, sign_in
from tests.support import ServerThread, prepared_settings

TEMPLATE = '{\n  "user": {"first_name": "{{ visitor.first_name }}"},\n  "page": {"title": "Welcome"}\n}'
MISTAKE = '{\n  "user": {"first_name": "{{ visitor.first_name }}"},\n  "page": {"title": "Welcome",}\n}'
VARIABLES = '[{"name": "first_name", "type": "string", "example": "Ana", "source": "query"}]'
DRAFT = '{\n  "user": {"first_name": "Doctor {{ visitor.first_name }}"},\n  "page": {"title": "Welcome"}\n}'
SIMULATOR_TURN = '{"urls": ["stun:127.0.0.1:3478"], "iceTransportPolicy": "all"}'


@pytest.fixture
def console(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url)
    create_admin(settings, "ops@example.com")
    with ServerThread(create_app(settings)) as server:
        yield server, settings


def replace_text(page: Page, label: str, text: str) -> None:
    """Type into a field found by its visible label (CodeMirror's own input when it enhances a textarea)."""
    page.wait_for_load_state("networkidle")  # CodeMirror has taken over the textareas
    field = page.get_by_label(label, exact=True)
    field.focus()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def test_an_admins_day_from_template_to_conversation(
    console: tuple[ServerThread, Settings], watch: PageWatch
) -> None:
    server, _ = console
    page = watch.page
    visited: list[str] = []

    def clean() -> None:
        """The page now on screen: no CSP violation, no console error, nothing serious for axe-core."""
        page.wait_for_load_state("networkidle")
        visited.append(page.url)
        assert watch.violations() == [], page.url
        assert watch.console_errors == [], (page.url, watch.console_errors)
        assert serious_axe_findings(page) == [], page.url

    sign_in(page, f"{server.url}/admin", "ops@example.com")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    clean()

    # A new template, first with a mistake: the preview names its line.
    page.get_by_role("link", name="Templates", exact=True).click()
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Name", exact=True).fill("welcome")
    replace_text(page, "Variables", VARIABLES)
    replace_text(page, "Template", MISTAKE)
    expect(page.locator("#preview-errors")).to_contain_text("line 3")
    replace_text(page, "Template", TEMPLATE)
    expect(page.locator("#preview-errors li")).to_have_count(0)
    sample = page.get_by_label("first_name", exact=True)
    sample.fill("Ana")
    expected = {"user": {"first_name": "Ana"}, "page": {"title": "Welcome"}}
    expect(page.locator("#preview-output")).to_have_text(json.dumps(expected, separators=(",", ":")))
    clean()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("heading", name="Template welcome")).to_be_visible()
    clean()

    # A flow on the simulator that uses it.
    page.get_by_role("link", name="Flows", exact=True).click()
    page.get_by_role("link", name="New flow").click()
    page.get_by_label("Address (slug)").fill("welcome")
    page.get_by_label("Display name").fill("Welcome desk")
    page.get_by_label("Client id").fill("welcome-client")
    page.get_by_label("Flow id").fill("welcome-flow")
    page.get_by_label("Upstream").select_option("simulator")
    page.get_by_label("TURN override (JSON)").fill(SIMULATOR_TURN)
    page.get_by_label("DPP template").select_option("welcome")
    page.get_by_role("button", name="Create flow").click()
    expect(page.get_by_role("link", name="Open page")).to_be_visible()
    clean()

    # The hosted page: the avatar greets with the name the preview showed.
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open page").click()
    visitor = opened.value
    visitor.goto(f"{server.url}/a/welcome?first_name=Ana")
    visitor.get_by_role("button", name="Start conversation").click()
    expect(visitor.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
    conversation_id = visitor.evaluate(
        "JSON.parse(document.getElementById('avatar-config').textContent).session.id"
    )
    visitor.get_by_role("button", name="End conversation").click()
    expect(visitor.locator("#status")).to_contain_text("You ended the conversation", timeout=10_000)

    # A draft, tried through the preview link before it is published.
    page.get_by_role("link", name="Templates", exact=True).click()
    page.get_by_role("link", name="welcome", exact=True).click()
    replace_text(page, "Template", DRAFT)
    expect(page.locator("#preview-output")).to_contain_text('"first_name":"Doctor Ana"')
    with page.context.expect_page() as opened:  # saved as a draft, then opened with the sample values
        page.get_by_role("button", name="Try as draft").click()
    trial = opened.value
    trial.wait_for_load_state("networkidle")
    trial.get_by_role("button", name="Start conversation").click()
    expect(trial.locator("#transcript")).to_contain_text("Hello Doctor Ana!", timeout=30_000)
    trial.get_by_role("button", name="End conversation").click()
    trial.close()
    page.reload()
    expect(page.get_by_role("link", name="Version 2")).to_be_visible()
    expect(page.locator(".tpl-status")).to_contain_text("published: version 1")
    clean()
    # Visitors still hear the published version.
    visitor.goto(f"{server.url}/a/welcome?first_name=Ana")
    visitor.get_by_role("button", name="Start conversation").click()
    expect(visitor.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
    visitor.get_by_role("button", name="End conversation").click()
    visitor.close()

    # Publish the draft, then roll back: pointer moves, no new versions.
    page.get_by_role("row", name=re.compile("Version 2")).get_by_role("button", name="Publish").click()
    expect(page.locator(".tpl-status")).to_contain_text("published: version 2")
    clean()
    page.get_by_role("row", name=re.compile("Version 1")).get_by_role(
        "button", name="Roll back to this version"
    ).click()
    expect(page.locator(".tpl-status")).to_contain_text("published: version 1")
    expect(page.get_by_role("link", name="Version 3")).to_have_count(0)
    clean()
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("pre.diff")).to_contain_text("Doctor")
    clean()

    page.get_by_role("link", name="Audit log", exact=True).click()
    log = page.locator("main")
    for action in ("create", "save", "publish", "rollback"):
        expect(log).to_contain_text(action)
    expect(log).not_to_contain_text("welcome-client")  # the Kaltura client id is masked
    clean()

    # The first visitor's conversation: transcript, the version it used, and its timeline.
    page.get_by_role("link", name="Conversations", exact=True).click()
    clean()
    page.locator(f'a[href="/admin/conversations/{conversation_id}"]').click()
    expect(page.locator(".transcript-lines")).to_contain_text("Hello Ana!")
    expect(page.locator("main")).to_contain_text("version 1")
    timeline = page.locator("#timeline + *")
    for kind in ("relay_connect", "upstream_connect", "end"):
        expect(timeline).to_contain_text(kind, timeout=10_000)
    clean()
    assert len(visited) >= 10
