"""API tokens in the console: created with scopes and shown once, used against the REST API, revoked."""

from __future__ import annotations

import html
import re

import httpx

from server import audit
from server.audit import AuditFilter
from server.settings import Settings
from tests.admin.console_client import ConsoleClient
from tests.admin.forms import error_beside, form_values
from tests.support import ServerThread, with_database

_SHOWN = re.compile(r'id="new-token" type="text" readonly value="([^"]+)"')


def create(client: ConsoleClient, name: str, *scopes: str) -> httpx.Response:
    client.get("/admin/tokens")
    return client.post("/admin/tokens", {"name": name, "scopes": list(scopes)})


def sessions(console: ServerThread, token: str) -> int:
    answer = httpx.get(f"{console.url}/api/v1/sessions", headers={"authorization": f"Bearer {token}"})
    return answer.status_code


def test_a_token_made_in_the_console_opens_the_api_until_it_is_revoked(
    admin: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    form = admin.get("/admin/tokens")
    assert form.status_code == 200 and ">transcripts:read</label>" in form.text
    assert form_values(form.text, "/admin/tokens")["scopes"] == "transcripts:read"  # checked by default
    made = create(admin, "crm-export", "transcripts:read")
    assert made.status_code == 201 and "shown only this once" in made.text
    found = _SHOWN.search(made.text)
    assert found and 'data-copy="#new-token"' in made.text
    token = found.group(1)
    assert sessions(console, token) == 200

    listing = admin.get("/admin/tokens").text
    assert token not in listing  # never shown again
    row = listing.split(">crm-export</th>")[1].split("</tr>")[0]
    assert "transcripts:read" in row and token[:14] in row and "never" not in row  # last used: now
    (revoke,) = re.findall(r'action="(/admin/tokens/\d+/revoke)"', listing)

    answer = admin.post(revoke)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/tokens?done=revoked"
    assert sessions(console, token) == 401
    after = admin.get("/admin/tokens?done=revoked").text
    assert "Token revoked" in after and 'badge off">revoked' in after and revoke not in after

    entries = with_database(console_settings, lambda db: audit.entries(db, AuditFilter(target_type="token")))
    assert [(e.action, e.target, e.actor) for e in entries] == [
        ("revoke", "crm-export", "admin@example.com"),
        ("create", "crm-export", "admin@example.com"),
    ]
    assert entries[0].before["revoked_at"] is None and entries[0].after["revoked_at"]
    assert token not in str([(e.before, e.after) for e in entries])


def test_a_token_without_a_name_or_scope_is_refused_beside_the_field(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    unnamed = create(admin, "  ", "transcripts:delete")
    assert unnamed.status_code == 400 and "name of 1 to 120" in (error_beside(unnamed.text, "name") or "")
    kept = form_values(unnamed.text, "/admin/tokens")
    assert kept["scopes"] == "transcripts:delete"
    unscoped = create(admin, "ops")
    assert unscoped.status_code == 400
    assert "at least one scope" in (error_beside(unscoped.text, "scopes") or "")
    assert form_values(unscoped.text, "/admin/tokens")["name"] == "ops"
    unknown = create(admin, "ops", "admin:everything")
    assert unknown.status_code == 400 and "admin:everything" in (error_beside(unknown.text, "scopes") or "")
    assert 'id="new-token"' not in unknown.text
    tokens = AuditFilter(target_type="token")
    assert with_database(console_settings, lambda db: audit.entries(db, tokens)) == []


def test_viewers_see_tokens_but_cannot_make_or_revoke_them(
    viewer: ConsoleClient, admin: ConsoleClient, console: ServerThread
) -> None:
    token = _SHOWN.search(create(admin, "nightly", "transcripts:read").text)
    assert token
    page = viewer.get("/admin/tokens")
    assert page.status_code == 200 and "nightly" in page.text
    assert page.text.count('method="post"') == 1  # sign-out only
    assert viewer.post("/admin/tokens", {"name": "mine", "scopes": ["transcripts:read"]}).status_code == 403
    (revoke,) = re.findall(r'action="(/admin/tokens/\d+/revoke)"', admin.get("/admin/tokens").text)
    assert viewer.post(revoke).status_code == 403
    assert sessions(console, token.group(1)) == 200
    assert "mine" not in admin.get("/admin/tokens").text


def test_markup_in_a_token_name_renders_as_text(admin: ConsoleClient) -> None:
    for payload in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>"):
        made = create(admin, payload, "transcripts:read")
        assert made.status_code == 201
        for text in (made.text, admin.get("/admin/tokens").text):
            assert payload not in text and html.escape(payload, quote=False) in text
