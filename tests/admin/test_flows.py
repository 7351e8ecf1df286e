"""Flows in the console: the list, create and edit forms, write-only ids, enable/disable, delete, roles."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import update

from server import audit, flows
from server.app import create_app
from server.audit import AuditFilter
from server.db import Database
from server.flows import IMPORT_ACTOR, FlowSpec
from server.models import AuditEntry, Conversation
from server.sdk import DEFAULT_SDK_VERSION
from server.security.signing import Signer
from server.settings import Settings
from tests.admin.console_client import ConsoleClient, create_admin
from tests.admin.forms import error_beside, form_values
from tests.factories import age_conversation, start_conversation
from tests.support import ServerThread, eventually, prepared_settings, with_database

CLIENT_ID = "acme-client-7f3a91c2"
FLOW_ID = "acme-flow-0b5e44d9"
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")


def new_flow(**changes: str) -> dict[str, str]:
    """The new-flow form as an admin fills it in (checked boxes are sent, unchecked ones are not)."""
    return {
        "slug": "acme",
        "display_name": "Acme helper",
        "client_id": CLIENT_ID,
        "flow_id": FLOW_ID,
        "sdk_mode": "socket",
        "upstream": "simulator",
        "custom_endpoints": "",
        "sdk_version": DEFAULT_SDK_VERSION,
        "genui_enabled": "on",
        "spoken_commands": "",
        "turn_override": '{"urls": ["stun:127.0.0.1:3478"], "iceTransportPolicy": "all"}',
        "page_context": "",
        "allowed_origins": "https://shop.example\nhttps://www.shop.example",
        "genui_origins": "",
        "dpp_template": "demo-welcome",
        "enabled": "on",
        "retention_days": "30",
        **changes,
    }


def saved_spec(settings: Settings, slug: str) -> FlowSpec:
    return with_database(settings, lambda db: flows.flow_spec(db, slug))


def audit_entries(settings: Settings, target: str) -> list[AuditEntry]:
    """What the console's admins did to `target` (the demo flows' seeding import is left out)."""
    found = with_database(settings, lambda db: audit.entries(db, AuditFilter(target=target)))
    return [entry for entry in found if entry.actor != IMPORT_ACTOR]


def test_an_admin_creates_a_flow_and_its_hosted_page_opens(
    admin: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    listing = admin.get("/admin/flows")
    assert listing.status_code == 200 and 'href="/admin/flows/new"' in listing.text
    form = admin.get("/admin/flows/new")
    assert form.status_code == 200
    for label in ("Address (slug)", "Display name", "Client id", "Flow id", "Spoken commands (JSON)"):
        assert f">{label}</label>" in form.text
    created = admin.post("/admin/flows/new", new_flow())
    assert created.status_code == 303 and created.headers["location"] == "/admin/flows/acme?done=created"

    page = admin.get(created.headers["location"])
    assert page.status_code == 200 and "Flow created." in page.text
    hosted = f"{console.url}/a/acme"
    assert f'id="hosted-url" type="text" readonly value="{hosted}"' in page.text
    assert f'<a class="button" href="{hosted}" target="_blank" rel="noopener">Open page</a>' in page.text
    snippet = html.unescape(page.text.split('id="embed-snippet"')[1].split(">", 1)[1].split("</textarea>")[0])
    assert snippet.startswith(f'<iframe src="{hosted}" title="Acme helper" allow="microphone; camera;')
    assert 'data-copy="#hosted-url"' in page.text and 'data-copy="#embed-snippet"' in page.text

    visitor = httpx.get(hosted)
    assert visitor.status_code == 200 and "Acme helper" in visitor.text

    spec = saved_spec(console_settings, "acme")
    assert (spec.client_id, spec.flow_id, spec.retention_days) == (CLIENT_ID, FLOW_ID, 30)
    assert spec.allowed_origins == ["https://shop.example", "https://www.shop.example"]
    assert spec.turn_override and spec.turn_override.iceTransportPolicy == "all"
    assert [c.phrase for c in spec.spoken_commands] == ["Ending call now."]  # empty: the default
    listed = admin.get("/admin/flows").text
    assert "Acme helper" in listed and 'href="/admin/flows/acme"' in listed


def test_invalid_input_is_shown_beside_each_field_with_the_input_kept_and_nothing_written(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    admin.get("/admin/flows/new")
    answer = admin.post(
        "/admin/flows/new",
        new_flow(
            slug="Not A Slug",
            allowed_origins="https://ok.example\nnot an origin",
            turn_override='{"urls": ["stun:x"],',
            spoken_commands='[{"phrase": "x"}]',
            retention_days="soon",
            client_id="",
        ),
    )
    assert answer.status_code == 400
    page = answer.text
    assert "lowercase letters, digits and dashes" in (error_beside(page, "slug") or "")
    assert "'not an origin' is not an origin" in (error_beside(page, "allowed_origins") or "")
    assert "not valid JSON" in (error_beside(page, "turn_override") or "")
    assert "line 1, column" in (error_beside(page, "turn_override") or "")
    assert "0.phrase" in (error_beside(page, "spoken_commands") or "")
    assert "whole number" in (error_beside(page, "retention_days") or "")
    assert "at least 1 character" in (error_beside(page, "client_id") or "")
    assert error_beside(page, "display_name") is None
    kept = form_values(page, "/admin/flows/new")
    assert kept["slug"] == "Not A Slug" and kept["retention_days"] == "soon"
    assert kept["allowed_origins"] == "https://ok.example\nnot an origin"
    assert kept["turn_override"] == '{"urls": ["stun:x"],'
    assert kept["dpp_template"] == "demo-welcome" and kept["flow_id"] == FLOW_ID
    assert admin.get("/admin/flows/not-a-slug").status_code == 404
    assert audit_entries(console_settings, "Not A Slug") == []

    taken = admin.post("/admin/flows/new", new_flow(slug="demo"))
    assert taken.status_code == 400 and "exists already" in (error_beside(taken.text, "slug") or "")
    reserved = admin.post("/admin/flows/new", new_flow(slug="new"))
    assert reserved.status_code == 400 and "reserved" in (error_beside(reserved.text, "slug") or "")


def test_a_custom_upstream_must_name_allowed_hosts(admin: ConsoleClient) -> None:
    admin.get("/admin/flows/new")
    endpoints = json.dumps(dict.fromkeys(("socket", "whep", "api", "meet"), "https://evil.example"))
    refused = admin.post("/admin/flows/new", new_flow(upstream="custom", custom_endpoints=endpoints))
    assert refused.status_code == 400
    assert "AVATAR_BFF_ALLOWED_UPSTREAM_HOSTS" in (error_beside(refused.text, "custom_endpoints") or "")
    incomplete = admin.post("/admin/flows/new", new_flow(upstream="custom"))
    assert incomplete.status_code == 400
    assert "needs custom_endpoints" in (error_beside(incomplete.text, "custom_endpoints") or "")


def test_ids_are_write_only_and_kept_when_left_empty(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    admin.get("/admin/flows/new")
    turn = {"urls": ["turn:turn.example:3478"], "username": "turn-user-4821", "credential": "turn-pass-9934"}
    assert admin.post("/admin/flows/new", new_flow(turn_override=json.dumps(turn))).status_code == 303
    pages = ["/admin/flows", "/admin/flows/acme", "/admin/flows/acme/edit", "/admin/flows/acme/delete"]
    for path in pages:
        text = admin.get(path).text
        assert CLIENT_ID not in text and FLOW_ID not in text, path
        assert "turn-user-4821" not in text and "turn-pass-9934" not in text, path
    edit = admin.get("/admin/flows/acme/edit").text
    assert "••••91c2" in edit and "••••44d9" in edit
    values = form_values(edit, "/admin/flows/acme/edit")
    assert values["client_id"] == "" and values["flow_id"] == ""

    saved = admin.post("/admin/flows/acme/edit", {**values, "display_name": "Acme helper 2"})
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/flows/acme?done=saved"
    spec = saved_spec(console_settings, "acme")
    assert (spec.display_name, spec.client_id, spec.flow_id) == ("Acme helper 2", CLIENT_ID, FLOW_ID)
    assert spec.turn_override and spec.turn_override.credential == "turn-pass-9934"  # its mask kept it
    assert spec.turn_override.username == "turn-user-4821"

    replaced = admin.post("/admin/flows/acme/edit", {**values, "client_id": "acme-client-new00001"})
    assert replaced.status_code == 303
    assert saved_spec(console_settings, "acme").client_id == "acme-client-new00001"
    # An edit refused elsewhere still keeps the stored ids out of the page.
    refused = admin.post("/admin/flows/acme/edit", {**values, "display_name": ""})
    assert refused.status_code == 400 and "acme-client-new00001" not in refused.text
    assert FLOW_ID not in refused.text

    # Saved again as it stands: nothing changes, nothing is recorded.
    again = admin.post("/admin/flows/acme/edit", values)
    assert again.status_code == 303
    updates = [e for e in audit_entries(console_settings, "acme") if e.action == "update"]
    assert len(updates) == 2
    latest = updates[0]
    assert latest.after["client_id"] == "••••0001" and latest.before["client_id"] == "••••91c2"
    assert CLIENT_ID not in str(latest.before) + str(latest.after)


def test_renaming_a_flow_moves_its_page(admin: ConsoleClient, console: ServerThread) -> None:
    values = form_values(admin.get("/admin/flows/demo/edit").text, "/admin/flows/demo/edit")
    moved = admin.post("/admin/flows/demo/edit", {**values, "slug": "demo-two"})
    assert moved.status_code == 303 and moved.headers["location"] == "/admin/flows/demo-two?done=saved"
    assert httpx.get(f"{console.url}/a/demo-two").status_code == 200
    taken = admin.post("/admin/flows/demo-two/edit", {**values, "slug": "demo-iframe"})
    assert taken.status_code == 400 and "exists already" in (error_beside(taken.text, "slug") or "")


def test_disabling_and_enabling_changes_what_the_hosted_page_answers(
    admin: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    page = f"{console.url}/a/demo"
    assert httpx.get(page).status_code == 200
    shown = admin.get("/admin/flows/demo").text
    assert 'action="/admin/flows/demo/disable" data-confirm=' in shown
    answer = admin.post("/admin/flows/demo/disable")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/flows/demo?done=disabled"
    eventually(lambda: httpx.get(page).status_code == 404, timeout=10, what="the page refused")
    assert "badge off" in admin.get("/admin/flows").text
    assert admin.post("/admin/flows/demo/enable").status_code == 303
    eventually(lambda: httpx.get(page).status_code == 200, timeout=10, what="the page served again")
    actions = [e.action for e in audit_entries(console_settings, "demo")]
    assert actions == ["enable", "disable"]  # newest first


def test_deleting_a_flow_says_what_is_lost_then_removes_it_with_its_conversations(
    admin: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    signer = Signer(console_settings.secret)
    with_database(console_settings, lambda db: start_conversation(db, signer, "demo"))
    confirm = admin.get("/admin/flows/demo/delete")
    assert confirm.status_code == 200
    text = " ".join(confirm.text.split())
    assert "its 1 conversation" in text and "their transcripts" in text
    assert 'data-confirm="Delete this flow' in confirm.text
    answer = admin.post("/admin/flows/demo/delete")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/flows?done=deleted"
    assert admin.get("/admin/flows/demo").status_code == 404
    assert 'href="/admin/flows/demo"' not in admin.get("/admin/flows").text
    eventually(lambda: httpx.get(f"{console.url}/a/demo").status_code == 404, timeout=10, what="gone")
    (deleted,) = audit_entries(console_settings, "demo")
    assert deleted.action == "delete" and deleted.after is None
    assert deleted.before["client_id"] == "••••" + "demo-client"[-4:]


def test_viewers_see_no_forms_and_every_change_is_refused(
    viewer: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    listing = viewer.get("/admin/flows")
    assert listing.status_code == 200 and "/admin/flows/new" not in listing.text
    page = viewer.get("/admin/flows/demo")
    assert page.status_code == 200 and "Hosted page" in page.text
    assert page.text.count('method="post"') == 1  # sign-out only
    for path in ("/admin/flows/new", "/admin/flows/demo/edit", "/admin/flows/demo/delete"):
        assert viewer.get(path).status_code == 403, path
    before = saved_spec(console_settings, "demo")
    for path in ("new", "demo/edit", "demo/enable", "demo/disable", "demo/delete"):
        assert viewer.post(f"/admin/flows/{path}", new_flow(slug="viewer-made")).status_code == 403, path
    assert saved_spec(console_settings, "demo") == before
    assert viewer.get("/admin/flows/viewer-made").status_code == 404
    assert httpx.get(f"{console.url}/a/demo").status_code == 200


def test_markup_in_stored_fields_renders_as_text_on_every_flow_page(admin: ConsoleClient) -> None:
    for number, payload in enumerate(XSS):
        slug = f"xss-{number}"
        admin.get("/admin/flows/new")
        created = admin.post("/admin/flows/new", new_flow(slug=slug, display_name=payload))
        assert created.status_code == 303
        refused = admin.post("/admin/flows/new", new_flow(slug=payload, display_name=payload))
        assert refused.status_code == 400
        pages = [
            admin.get("/admin/flows").text,
            admin.get(f"/admin/flows/{slug}").text,
            admin.get(f"/admin/flows/{slug}/edit").text,
            admin.get(f"/admin/flows/{slug}/delete").text,
            refused.text,
        ]
        for text in pages:
            assert payload not in text
            assert html.escape(payload, quote=False) in text or html.escape(payload) in text


def test_the_list_counts_todays_conversations_without_previews(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    signer = Signer(console_settings.secret)

    async def conversations(db: Database) -> None:
        await start_conversation(db, signer, "demo")
        preview = await start_conversation(db, signer, "demo")
        yesterday = await start_conversation(db, signer, "demo")
        await start_conversation(db, signer, "demo-iframe")
        await age_conversation(db, yesterday.id, created_at=datetime.now(UTC) - timedelta(days=1, hours=1))
        async with db.transaction() as session:  # as an admin's preview link starts one
            await session.execute(
                update(Conversation).where(Conversation.id == preview.id).values(preview=True)
            )

    with_database(console_settings, conversations)
    page = admin.get("/admin/flows").text
    rows = {}
    for row in page.split("<tbody>")[1].split("</tr>")[:-1]:
        slug = re.search(r'href="/admin/flows/([a-z0-9-]+)"', row)
        assert slug
        rows[slug.group(1)] = re.findall(r"<td>(\d+)</td>", row)
    assert rows == {"demo": ["1"], "demo-iframe": ["1"]}
    assert 'href="/admin/flows/demo/edit">Edit' in page


def test_the_hosted_link_uses_the_public_url_when_one_is_set(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, public_url="http://avatars.example.test:8080")
    email = create_admin(settings, "ops@example.com")
    with ServerThread(create_app(settings)) as server, ConsoleClient(server.url) as client:
        assert client.sign_in(email).status_code == 303
        page = client.get("/admin/flows/demo").text
    assert 'value="http://avatars.example.test:8080/a/demo"' in page
    assert '<iframe src="http://avatars.example.test:8080/a/demo"' in html.unescape(page)
