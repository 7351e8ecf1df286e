"""The audit log page: who changed what, newest first, with a per-field diff, filters and paging."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

from server import api_tokens
from server.db import Database
from server.settings import Settings
from tests.admin.console_client import ConsoleClient
from tests.admin.forms import error_beside, form_values
from tests.admin.test_flows import CLIENT_ID, FLOW_ID, XSS, new_flow
from tests.factories import change_flow, create_flow
from tests.support import with_database


def entries_of(page: str) -> list[str]:
    """Each entry's head line as text: 'time actor action type target'."""
    heads = re.findall(r'<p class="audit-head">(.*?)</p>', page, re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", head)).split()) for head in heads]


def diff_rows(page: str, index: int) -> dict[str, tuple[str, str]]:
    """The diff of the index-th entry: field → (before, after)."""
    entry = page.split('<li class="card">')[index + 1].split("</li>")[0]
    rows = re.findall(
        r'<th scope="row" class="mono">(.*?)</th>\s*'
        r'<td class="del mono">(.*?)</td>\s*<td class="add mono">(.*?)</td>',
        entry,
        re.S,
    )
    return {html.unescape(f): (html.unescape(b), html.unescape(a)) for f, b, a in rows}


def test_each_change_is_listed_newest_first_with_what_changed_and_secrets_masked(
    admin: ConsoleClient,
) -> None:
    admin.get("/admin/flows/new")
    assert admin.post("/admin/flows/new", new_flow()).status_code == 303
    values = form_values(admin.get("/admin/flows/acme/edit").text, "/admin/flows/acme/edit")
    assert admin.post("/admin/flows/acme/edit", {**values, "display_name": "Acme 2"}).status_code == 303
    assert admin.post("/admin/flows/acme/disable").status_code == 303
    admin.get("/admin/tokens")
    assert admin.post("/admin/tokens", {"name": "crm", "scopes": ["transcripts:read"]}).status_code == 201

    page = admin.get("/admin/audit?who=admin%40example.com").text  # not the demo flows' seeding import
    heads = entries_of(page)
    assert [head.split(" UTC ")[1] for head in heads] == [
        "admin@example.com create token crm",
        "admin@example.com disable flow acme",
        "admin@example.com update flow acme",
        "admin@example.com create flow acme",
    ]
    assert CLIENT_ID not in page and FLOW_ID not in page
    assert diff_rows(page, 1) == {"enabled": ("true", "false")}
    assert diff_rows(page, 2) == {"display_name": ("Acme helper", "Acme 2")}  # only what changed
    created = diff_rows(page, 3)
    assert created["client_id"] == ("—", "••••91c2") and created["slug"] == ("—", "acme")
    assert created["allowed_origins"][1] == '["https://shop.example", "https://www.shop.example"]'
    token = diff_rows(page, 0)
    assert token["scopes"] == ("—", '["transcripts:read"]') and set(token) == {"name", "prefix", "scopes"}


def test_filters_narrow_the_log_and_bad_filters_are_named(
    admin: ConsoleClient, viewer: ConsoleClient
) -> None:
    admin.get("/admin/flows/new")
    assert admin.post("/admin/flows/new", new_flow()).status_code == 303
    assert admin.post("/admin/flows/demo/disable").status_code == 303
    admin.get("/admin/tokens")
    assert admin.post("/admin/tokens", {"name": "crm", "scopes": ["transcripts:read"]}).status_code == 201

    def targets(query: str) -> list[str]:
        answer = viewer.get(f"/admin/audit?{query}")  # viewers read the log
        assert answer.status_code == 200, answer.text
        return [head.split()[-1] for head in entries_of(answer.text)]

    assert targets("what=token") == ["crm"]
    assert targets("what=flow&who=admin%40example.com") == ["demo", "acme"]
    assert targets("target=acme") == ["acme"]
    assert targets("who=admin%40example.com&what=flow&target=demo") == ["demo"]
    assert targets("who=viewer%40example.com") == []
    assert targets("who=admin%40example.com&since=2000-01-01&until=2999-12-31") == ["crm", "demo", "acme"]
    assert targets("since=2999-01-01") == []
    assert targets("until=2000-01-01") == []
    link = 'href="/admin/audit?what=flow&amp;target=acme"'
    assert link in viewer.get("/admin/audit").text

    bad = viewer.get("/admin/audit?since=31/01/2026&what=everything")
    assert bad.status_code == 400
    assert "2026-01-31" in (error_beside(bad.text, "since") or "")
    assert "flow" in (error_beside(bad.text, "what") or "")
    assert form_values(bad.text, "/admin/audit")["since"] == "31/01/2026"
    reversed_range = viewer.get("/admin/audit?since=2026-02-01&until=2026-01-01")
    assert reversed_range.status_code == 400
    assert "before the start" in (error_beside(reversed_range.text, "until") or "")


def test_the_log_pages_older_and_newer(admin: ConsoleClient, console_settings: Settings) -> None:
    async def many(db: Database) -> None:
        for number in range(57):
            await api_tokens.create_token(db, f"t{number}", ["transcripts:read"], actor="ops@example.com")

    with_database(console_settings, many)
    first = admin.get("/admin/audit?what=token").text
    names = [head.split()[-1] for head in entries_of(first)]
    assert names == [f"t{n}" for n in range(56, 6, -1)]  # 50, newest first
    assert "Newer" not in first
    older = re.search(r'href="([^"]+)" rel="next">Older', first)
    assert older
    second = admin.get(html.unescape(older.group(1))).text
    assert [head.split()[-1] for head in entries_of(second)] == [f"t{n}" for n in range(6, -1, -1)]
    assert "Older" not in second
    newer = re.search(r'href="([^"]+)" rel="prev">← Newer', second)
    assert newer and "what=token" in newer.group(1)
    back = admin.get(html.unescape(newer.group(1))).text
    assert [head.split()[-1] for head in entries_of(back)] == names
    assert "Newer" not in back


def test_markup_in_logged_values_renders_as_text(admin: ConsoleClient) -> None:
    for number, payload in enumerate(XSS):
        admin.get("/admin/flows/new")
        assert (
            admin.post("/admin/flows/new", new_flow(slug=f"x{number}", display_name=payload)).status_code
            == 303
        )
        assert (
            admin.post("/admin/tokens", {"name": payload, "scopes": ["transcripts:read"]}).status_code == 201
        )
    for query in ("", "?" + urlencode({"target": XSS[1], "who": XSS[0]})):  # typed filters are shown too
        page = admin.get(f"/admin/audit{query}").text
        for payload in XSS:
            assert payload not in page and html.escape(payload, quote=False) in page


def test_imports_from_the_command_line_are_logged_once_with_ids_masked(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    async def imports(db: Database) -> None:
        await create_flow(db, "imported", template_body={"a": "{{ visitor.x }}"}, client_id="client-7654321")
        await change_flow(db, "imported")  # the same again: nothing changed, nothing logged
        await change_flow(db, "imported", display_name="Renamed")

    with_database(console_settings, imports)
    page = admin.get("/admin/audit?" + urlencode({"target": "imported"}))
    text = html.unescape(page.text)
    assert text.count("command line") == 3  # the template, the flow, its rename
    assert "Renamed" in text and "client-7654321" not in text and "4321" in text
