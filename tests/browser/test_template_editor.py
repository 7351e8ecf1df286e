"""The DPP template editor in Chromium: CodeMirror under the strict CSP, a mistake shown by line, the live
preview of the exact DPP, and a save that becomes a draft version."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from server.app import create_app
from server.settings import Settings
from tests.admin.console_client import create_admin
from tests.browser.conftest import PageWatch
from tests.browser.console_checks import sign_in
from tests.support import ServerThread, prepared_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return prepared_settings(tmp_path)


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    create_admin(settings, "admin@example.com")
    with ServerThread(create_app(settings)) as running:
        yield running


def test_editing_a_template_with_codemirror_and_the_live_preview(
    server: ServerThread, watch: PageWatch
) -> None:
    page = watch.page
    page.set_viewport_size({"width": 360, "height": 800})  # a phone: nothing may scroll sideways

    def clean() -> None:
        assert watch.violations() == [], page.url
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url

    sign_in(page, f"{server.url}/admin/templates/demo-welcome", "admin@example.com")
    expect(page.get_by_role("heading", name="Template demo-welcome")).to_be_visible()

    editor = page.locator(".CodeMirror.tpl-editor").first
    expect(editor).to_be_visible()
    expect(editor.locator(".CodeMirror-linenumber").first).to_be_visible()
    template = page.get_by_label("Template", exact=True)
    expect(template).to_have_count(1)  # the visible label names the editor's own input

    output = page.locator("#preview-output")
    expect(page.locator("#preview-errors")).to_have_text("")
    expect(output).to_contain_text('"title":"Demo avatar (Socket SDK)"')

    # A mistake on line 3: the preview says where, and the line is marked.
    template.focus()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text('{\n  "user": {"first_name": "{{ visitor.first_name }}"},\n  "oops": ,\n}')
    expect(page.locator("#preview-errors")).to_contain_text("Template: line 3, column 11")
    expect(page.locator(".tpl-error-line")).to_have_count(1)

    template.focus()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text('{"user": {"first_name": "Hi {{ visitor.first_name }}"}}')
    variables = page.get_by_label("Variables", exact=True)
    variables.focus()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text('[{"name": "first_name", "example": "Ada"}]')
    sample = page.get_by_label("first_name", exact=True)
    expect(sample).to_have_value("Ada")
    sample.fill("Grace")
    expect(output).to_have_text(json.dumps({"user": {"first_name": "Hi Grace"}}, separators=(",", ":")))
    expect(page.locator("#preview-errors li")).to_have_count(0)

    # A schema the DPP breaks: the error names the path, and the template's line for it is marked.
    schema = page.get_by_label("JSON Schema", exact=True)
    schema.focus()
    page.keyboard.insert_text('{"properties": {"user": {"properties": {"first_name": {"maxLength": 5}}}}}')
    expect(page.locator("#preview-errors")).to_contain_text("$.user.first_name: 'Hi Grace' is too long")
    expect(page.locator(".tpl-error-line")).to_have_count(1)
    schema.focus()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    expect(page.locator("#preview-errors li")).to_have_count(0)

    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("status").first).to_contain_text("Saved as a new draft version")
    expect(page.get_by_role("link", name="Version 2")).to_be_visible()
    expect(page.locator(".tpl-status")).to_contain_text("published: version 1")
    clean()

    page.get_by_role("button", name="Compare").click()
    expect(page.locator("pre.diff .add").first).to_contain_text('"first_name": "Hi {{ visitor.first_name }}"')
    clean()
    page.get_by_role("link", name="Templates", exact=True).click()
    expect(page.get_by_role("row", name=re.compile("demo-welcome"))).to_contain_text("draft")
    clean()
    page.get_by_role("link", name="New template").click()
    expect(page.get_by_role("heading", name="New template")).to_be_visible()
    expect(page.locator("#preview-output")).to_contain_text('"first_name":"Ada"')
    clean()
    assert watch.console_errors == []
    assert all(re.match(rf"{re.escape(server.url)}/", url) for url in watch.requests), watch.requests
