"""DPP templates in the console: editor checks, live preview, versions, publishing, diffs, preview links."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape

from server import audit
from server.audit import AuditFilter
from server.conversations import lifecycle
from server.dpp.checks import dpp_text
from server.models import Conversation
from server.security.signing import Signer
from server.settings import Settings
from tests import factories
from tests.admin.console_client import ConsoleClient
from tests.support import ServerThread, prepared_settings, with_database

BODY = {
    "user": {"first_name": "{{ visitor.first_name | default('') }}"},
    "page": {"title": "Hello {{ flow.display_name }}"},
}
VARIABLES = [{"name": "first_name", "type": "string", "example": "Ada", "source": "query"}]
PAGE_CONFIG = re.compile(r'<script type="application/json" id="avatar-config">(.*?)</script>', re.S)


@pytest.fixture
def console_settings(tmp_path: Path) -> Settings:
    # Pages read their flow afresh on every view, so a publish shows at once.
    return prepared_settings(tmp_path, page_flow_cache_seconds=0)


def form(body: Any = BODY, variables: Any = VARIABLES, schema: Any = None, **extra: str) -> dict[str, str]:
    def text(value: Any) -> str:
        return value if isinstance(value, str) else ("" if value is None else json.dumps(value, indent=2))

    return {"body": text(body), "variables": text(variables), "schema": text(schema), **extra}


def create(admin: ConsoleClient, name: str, **fields: Any) -> httpx.Response:
    admin.get("/admin/templates/new")
    return admin.post("/admin/templates/new", {"name": name, "description": "", **form(**fields)})


def save(admin: ConsoleClient, name: str, **fields: Any) -> httpx.Response:
    admin.get(f"/admin/templates/{name}")
    return admin.post(f"/admin/templates/{name}", {"description": "", **form(**fields)})


def preview(client: ConsoleClient, **request: Any) -> httpx.Response:
    return client.http.post(
        "/admin/templates/preview",
        json={"body": json.dumps(BODY), "variables": json.dumps(VARIABLES), "schema": "", **request},
        headers={"X-CSRF-Token": client.csrf_token},
    )


def point_flow_at(settings: Settings, slug: str, template: str) -> None:
    from tests.factories import change_flow

    with_database(settings, lambda db: change_flow(db, slug, dpp_template=template))


def page_dpp(console: ServerThread, slug: str, query: str = "") -> Any:
    """The DPP an Iframe SDK page hands the avatar (it is in the page's config)."""
    page = httpx.get(f"{console.url}/a/{slug}{query}")
    assert page.status_code == 200, page.text
    found = PAGE_CONFIG.search(page.text)
    assert found, page.text
    return json.loads(found.group(1))["dpp"]


def test_the_list_shows_each_template_its_versions_and_the_flows_using_it(admin: ConsoleClient) -> None:
    page = admin.get("/admin/templates")
    assert page.status_code == 200
    row = re.search(
        r"<tr>\s*<th scope=\"row\"><a href=\"/admin/templates/demo-welcome\">.*?</tr>", page.text, re.S
    )
    assert row, page.text
    cells = re.findall(r"<td>(.*?)</td>", row.group(0), re.S)
    assert cells[0] == "Greets the visitor, asks two questions"
    assert cells[1].strip() == "1" and cells[2].strip() == "1"
    assert "<code>demo</code>" in cells[3] and "<code>demo-iframe</code>" in cells[3]
    assert 'href="/admin/templates/new">New template</a>' in page.text


def test_a_json_mistake_is_shown_beside_the_template_field_with_line_and_column_and_nothing_is_saved(
    admin: ConsoleClient,
) -> None:
    broken = '{\n  "user": {"first_name": "{{ visitor.first_name }}"},\n  "page": "x",\n}\n'
    answer = create(admin, "broken", body=broken)
    assert answer.status_code == 400
    error = re.search(r'<div id="e-body"[^>]*>(.*?)</div>', answer.text, re.S)
    assert error and "line 4, column 1" in error.group(1), answer.text
    assert str(escape(broken)) in answer.text  # the input is kept as typed
    assert admin.get("/admin/templates/broken").status_code == 404


@pytest.mark.parametrize(
    ("leaf", "says"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ cycler.__init__.__globals__ }}", "__init__"),
        ("{{ visitor.__class__ }}", "unsafe"),
        ("{{ lipsum.__globals__['os'] }}", "__globals__"),
        (
            "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
            "longer than 1 s",
        ),
        ("{{ 'x' * 100000 }}", "exceeds 64 KB"),
    ],
)
def test_sandbox_escapes_and_unbounded_work_are_refused_with_a_clear_message(
    admin: ConsoleClient, leaf: str, says: str
) -> None:
    answer = create(admin, "escape", body={"x": leaf}, variables=None)
    assert answer.status_code == 400
    error = re.search(r'<div id="e-body"[^>]*>(.*?)</div>', answer.text, re.S)
    assert error and says in html.unescape(error.group(1)), answer.text
    assert admin.get("/admin/templates/escape").status_code == 404


def test_preview_returns_the_exact_dpp_the_relay_sends_for_the_sample_values(
    admin: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    admin.get("/admin/templates/demo-welcome")
    answer = preview(admin, sample={"first_name": "Grace <Hopper>"}, flow="demo")
    assert answer.status_code == 200, answer.text
    text = answer.json()["dpp"]
    assert json.loads(text)["user"]["first_name"] == "Grace <Hopper>"
    assert json.loads(text)["page"]["title"] == "Hello Demo avatar (Socket SDK)"
    # The same template on a page: the conversation's DPP, as the relay sends it upstream, is that text.
    create(admin, "greeting")
    point_flow_at(console_settings, "demo", "greeting")
    page = httpx.get(f"{console.url}/a/demo", params={"first_name": "Grace <Hopper>"})
    token = json.loads(PAGE_CONFIG.search(page.text).group(1))["session"]["token"]  # type: ignore[union-attr]
    signer = Signer(console_settings.secret)
    joined = with_database(console_settings, lambda db: lifecycle.join(db, signer, token, "demo"))
    assert joined.conversation is not None
    assert dpp_text(joined.conversation.rendered_dpp) == text


def test_preview_reports_json_mistakes_by_line_and_schema_breaches_by_path(admin: ConsoleClient) -> None:
    admin.get("/admin/templates")
    answer = preview(admin, body='{"a": 1,,}')
    assert answer.status_code == 200 and "dpp" not in answer.json()
    (error,) = answer.json()["errors"]
    assert (error["field"], error["line"], error["column"]) == ("body", 1, 9)
    schema = {"type": "object", "properties": {"user": {"properties": {"first_name": {"maxLength": 3}}}}}
    answer = preview(admin, schema=json.dumps(schema), sample={"first_name": "Margaret"})
    (error,) = answer.json()["errors"]
    assert error["path"] == "$.user.first_name" and "'Margaret' is too long" in error["message"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("new", "&#39;new&#39; is reserved"),
        ("a/b", "No slashes"),
        ("demo-welcome", "exists already"),
        ("", "Give"),
    ],
)
def test_a_bad_or_taken_name_is_refused_beside_the_name_field(
    admin: ConsoleClient, name: str, says: str
) -> None:
    answer = create(admin, name)
    assert answer.status_code in (400, 409)
    error = re.search(r'<p class="error" id="e-name">(.*?)</p>', answer.text)
    assert error and says in error.group(1), answer.text


def test_every_form_on_the_editor_carries_the_session_csrf_token(admin: ConsoleClient) -> None:
    page = admin.get("/admin/templates/demo-welcome")
    tokens = re.findall(r'name="csrf_token" value="([^"]*)"', page.text)
    assert len(tokens) >= 3 and set(tokens) == {admin.csrf_token} and admin.csrf_token


def test_a_viewer_may_preview_but_not_save_publish_or_delete(viewer: ConsoleClient) -> None:
    viewer.get("/admin/templates/demo-welcome")
    assert preview(viewer, sample={"first_name": "Ann"}).status_code == 200
    for path, data in [
        ("/admin/templates/demo-welcome", form()),
        ("/admin/templates/demo-welcome/publish", {"version": "1"}),
        ("/admin/templates/demo-welcome/delete", {}),
        ("/admin/templates/new", {"name": "x", **form()}),
    ]:
        assert viewer.post(path, data).status_code == 403, path
    assert viewer.get("/admin/templates/new").status_code == 403
    editor = viewer.get("/admin/templates/demo-welcome")
    assert ">Save</button>" not in editor.text and "Publish</button>" not in editor.text


def test_saves_are_drafts_and_publish_and_rollback_move_the_pointer_the_page_follows(
    admin: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    assert create(admin, "welcome").headers["location"] == "/admin/templates/welcome?done=created"
    point_flow_at(console_settings, "demo-iframe", "welcome")
    assert page_dpp(console, "demo-iframe", "?first_name=Ann")["user"]["first_name"] == "Ann"

    changed = {**BODY, "user": {"first_name": "Dear {{ visitor.first_name }}"}}
    assert save(admin, "welcome", body=changed).headers["location"] == "/admin/templates/welcome?done=saved"
    assert (
        save(admin, "welcome", body=changed).headers["location"] == "/admin/templates/welcome?done=unchanged"
    )
    described = save(admin, "welcome", body=changed, description="Greets")
    assert described.headers["location"] == "/admin/templates/welcome?done=described"
    editor = admin.get("/admin/templates/welcome")
    assert "published: version 1" in editor.text and "Version 2" in editor.text
    assert page_dpp(console, "demo-iframe", "?first_name=Ann")["user"]["first_name"] == "Ann"  # still v1

    assert admin.post("/admin/templates/welcome/publish", {"version": "2"}).status_code == 303
    assert page_dpp(console, "demo-iframe", "?first_name=Ann")["user"]["first_name"] == "Dear Ann"
    editor = admin.get("/admin/templates/welcome")
    assert "Roll back to this version" in editor.text

    assert admin.post("/admin/templates/welcome/publish", {"version": "1"}).status_code == 303
    assert page_dpp(console, "demo-iframe", "?first_name=Ann")["user"]["first_name"] == "Ann"
    listing = admin.get("/admin/templates").text
    row = re.search(r'href="/admin/templates/welcome">.*?</tr>', listing, re.S)
    assert row and re.findall(r"<td>(.*?)</td>", row.group(0), re.S)[1:3] == [
        "1",
        '2 <span class="badge warn">draft</span>',
    ]

    entries = with_database(console_settings, lambda db: audit.entries(db, AuditFilter(target="welcome")))
    assert [(e.action, e.actor) for e in reversed(entries)] == [
        ("create", "admin@example.com"),
        ("save", "admin@example.com"),
        ("save", "admin@example.com"),
        ("publish", "admin@example.com"),
        ("rollback", "admin@example.com"),
    ]
    assert entries[0].before == {"published_version": 2} and entries[0].after == {"published_version": 1}


def test_diff_shows_the_changed_line_marked(admin: ConsoleClient) -> None:
    create(admin, "letters")
    save(admin, "letters", body={**BODY, "page": {"title": "Welcome back"}})
    page = admin.get("/admin/templates/letters/diff", params={"a": 1, "b": 2})
    assert page.status_code == 200
    assert (
        '<span class="del">-      &#34;title&#34;: &#34;Hello {{ flow.display_name }}&#34;</span>'
        in page.text
    )
    assert '<span class="add">+      &#34;title&#34;: &#34;Welcome back&#34;</span>' in page.text


def test_a_template_in_use_cannot_be_deleted_and_one_unused_can_with_an_audit_entry(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    assert admin.post("/admin/templates/demo-welcome/delete").status_code == 409
    create(admin, "spare")
    assert admin.post("/admin/templates/spare/delete").headers["location"] == "/admin/templates?done=deleted"
    assert admin.get("/admin/templates/spare").status_code == 404
    entry = with_database(console_settings, lambda db: audit.entries(db, AuditFilter(target="spare")))[0]
    assert entry.action == "delete" and entry.before["versions"] == 1


def test_the_preview_link_opens_only_for_a_signed_in_admin_and_marks_its_conversation(
    admin: ConsoleClient, viewer: ConsoleClient, console: ServerThread, console_settings: Settings
) -> None:
    create(admin, "drafty")
    point_flow_at(console_settings, "demo-iframe", "drafty")
    save(admin, "drafty", body={**BODY, "user": {"first_name": "Draft {{ visitor.first_name }}"}})
    admin.get("/admin/templates/drafty")
    link = admin.post("/admin/templates/drafty/try", {"version": "2", "flow": "demo-iframe"})
    assert link.status_code == 303 and link.headers["location"].startswith("/admin/preview/")
    page = admin.get(link.headers["location"] + "?first_name=Ann")
    assert page.status_code == 200
    config = json.loads(PAGE_CONFIG.search(page.text).group(1))  # type: ignore[union-attr]
    assert config["dpp"]["user"]["first_name"] == "Draft Ann"
    assert page_dpp(console, "demo-iframe", "?first_name=Ann")["user"]["first_name"] == "Ann"  # published

    signer = Signer(console_settings.secret)
    token = config["session"]["token"]
    joined = with_database(
        console_settings, lambda db: factories.start_with_token(db, signer, token, "demo-iframe")
    )
    conversation: Conversation | None = joined.conversation
    assert conversation is not None and conversation.preview is True
    assert conversation.rendered_dpp["user"]["first_name"] == "Draft Ann"
    published = httpx.get(f"{console.url}/a/demo-iframe")
    ordinary = json.loads(PAGE_CONFIG.search(published.text).group(1))["session"]["token"]  # type: ignore[union-attr]
    plain = with_database(
        console_settings, lambda db: factories.start_with_token(db, signer, ordinary, "demo-iframe")
    )
    assert plain.conversation is not None and plain.conversation.preview is False
    assert plain.conversation.template_version_id != conversation.template_version_id

    # "Try as draft" from the editor: what was typed becomes a draft, opened with the sample values.
    typed = form(body={"user": {"first_name": "Tried {{ visitor.first_name }}"}})
    tried = admin.post(
        "/admin/templates/drafty",
        {**typed, "then": "try", "flow": "demo-iframe", "sample.first_name": "Lin"},
    )
    assert tried.status_code == 303 and tried.headers["location"].endswith("?first_name=Lin")
    opened = admin.get(tried.headers["location"]).text
    tried_config = json.loads(PAGE_CONFIG.search(opened).group(1))  # type: ignore[union-attr]
    assert tried_config["dpp"]["user"]["first_name"] == "Tried Lin"
    assert "Version 3" in admin.get("/admin/templates/drafty").text

    stranger = httpx.get(f"{console.url}{link.headers['location']}", follow_redirects=False)
    assert stranger.status_code == 303 and stranger.headers["location"].startswith("/admin/sign-in")
    assert viewer.get(link.headers["location"]).status_code == 403
    forged = link.headers["location"][:-3] + (
        "AAA" if not link.headers["location"].endswith("AAA") else "BBB"
    )
    assert admin.get(forged).status_code == 403


XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def test_markup_in_name_description_and_body_renders_inert(admin: ConsoleClient) -> None:
    admin.get("/admin/templates/new")
    name = "x<img src=x onerror=alert(3)>"
    answer = admin.post(
        "/admin/templates/new", {"name": name, "description": XSS, **form(body={"x": XSS}, variables=None)}
    )
    assert answer.status_code == 303
    location = answer.headers["location"].split("?")[0]
    name_in_path = location.removeprefix("/admin/templates/")
    save(admin, name_in_path, body={"x": XSS + "!"}, variables=None, description=XSS)
    for path in ["/admin/templates", location, f"{location}/diff?a=1&b=2"]:
        page = admin.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path
