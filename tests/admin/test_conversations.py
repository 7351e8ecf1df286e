"""The console's conversations: list and filters, one conversation (transcript inert, timeline), downloads,
erasure by admins only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from server import audit
from server.audit import AuditFilter
from server.conversations import timeline
from server.security.signing import Signer
from server.settings import Settings
from tests.admin.console_client import ConsoleClient
from tests.factories import StartedConversation, add_transcript_lines, age_conversation, start_conversation
from tests.support import ServerThread, database, run_async, stored_transcript, with_database

XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def started(settings: Settings, flow: str = "demo") -> StartedConversation:
    return with_database(settings, lambda db: start_conversation(db, Signer(settings.secret), flow))


def with_lines(settings: Settings, conversation_id: str, *texts: str) -> None:
    at = datetime.now(UTC)
    lines = [
        (i + 1, "User" if i % 2 else "Avatar", text, at + timedelta(seconds=i))
        for i, text in enumerate(texts)
    ]
    with_database(settings, lambda db: add_transcript_lines(db, conversation_id, "relay", lines))


def test_the_list_filters_by_flow_status_and_date_and_pages(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    ids = [started(console_settings).id for _ in range(27)]
    old = started(console_settings).id
    long_ago = datetime(2026, 1, 10, 12, tzinfo=UTC)
    with_database(
        console_settings,
        lambda db: age_conversation(db, old, created_at=long_ago, ended_at=long_ago + timedelta(minutes=3)),
    )
    page = admin.get("/admin/conversations")
    assert page.status_code == 200
    assert page.text.count('href="/admin/conversations/') == 25
    older = page.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    rest = admin.get(older)
    assert rest.text.count('href="/admin/conversations/') == 3 and old in rest.text
    assert ids[0] in rest.text  # the first started is among the oldest

    ended = admin.get("/admin/conversations", params={"status": "ended"})
    assert ended.text.count('href="/admin/conversations/') == 1 and old in ended.text
    assert "3 min 0 s" in ended.text and "Visitor ended" in ended.text
    january = admin.get("/admin/conversations", params={"since": "2026-01-10", "until": "2026-01-10"})
    assert january.text.count('href="/admin/conversations/') == 1 and old in january.text
    other_flow = admin.get("/admin/conversations", params={"flow": "demo-iframe"})
    assert "No conversations match" in other_flow.text
    previews = admin.get("/admin/conversations", params={"preview": "yes"})
    assert "No conversations match" in previews.text


def test_bad_filters_are_named_beside_their_field_and_kept(admin: ConsoleClient) -> None:
    page = admin.get(
        "/admin/conversations", params={"since": "yesterday", "flow": "nope", "until": "2026-01-01"}
    )
    assert page.status_code == 400
    assert "Enter a date as YYYY-MM-DD." in page.text and 'value="yesterday"' in page.text
    assert "No flow has this slug." in page.text
    backwards = admin.get("/admin/conversations", params={"since": "2026-02-01", "until": "2026-01-01"})
    assert backwards.status_code == 400 and "The end date is before the start date." in backwards.text
    assert admin.get("/admin/conversations", params={"cursor": "garbage"}).status_code == 400


def test_a_conversation_shows_its_transcript_inert_its_template_version_and_timeline(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    conversation = started(console_settings)
    with_lines(console_settings, conversation.id, "Hello Ana!", XSS)

    async def note() -> None:
        async with database(console_settings) as db, db.transaction() as session:
            await timeline.record(session, conversation.id, "relay_connect", {})
            await timeline.record(session, conversation.id, "upstream_connect", {"latency_ms": 42})
            await timeline.record(session, conversation.id, "refused", {"reason": "capacity"})

    run_async(note)
    page = admin.get(f"/admin/conversations/{conversation.id}")
    assert page.status_code == 200
    assert XSS not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=" in page.text
    assert "Hello Ana!" in page.text and "from relay" in page.text
    assert 'href="/admin/templates/demo-welcome?version=1"' in page.text
    timeline_part = page.text.split('id="timeline"')[1]
    for text in ("relay_connect", "upstream_connect", "latency_ms</span> 42", "refused", "capacity"):
        assert text in timeline_part
    assert 'class="danger"' in page.text and "2 transcript lines" in page.text


def test_downloads_as_text_markdown_and_json(admin: ConsoleClient, console_settings: Settings) -> None:
    conversation = started(console_settings)
    with_lines(console_settings, conversation.id, "Hello Ana!", "Hi there")
    text = admin.get(f"/admin/conversations/{conversation.id}/transcript.txt")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.headers["content-disposition"] == (
        f'attachment; filename="conversation-{conversation.id}.txt"'
    )
    assert text.text.splitlines()[1].endswith("] User: Hi there")
    markdown = admin.get(f"/admin/conversations/{conversation.id}/transcript.md")
    assert (
        markdown.headers["content-type"].startswith("text/markdown")
        and "**Avatar:** Hello Ana!" in markdown.text
    )
    document = admin.get(f"/admin/conversations/{conversation.id}/transcript.json")
    assert document.headers["content-disposition"].endswith('.json"')
    body = json.loads(document.text)
    assert body["session_id"] == conversation.id
    assert [(e["role"], e["text"], e["sources"]) for e in body["entries"]] == [
        ("Avatar", "Hello Ana!", ["relay"]),
        ("User", "Hi there", ["relay"]),
    ]
    assert admin.get(f"/admin/conversations/{conversation.id}/transcript.exe").status_code == 404
    assert admin.get(f"/admin/conversations/{'0' * 32}/transcript.txt").status_code == 404


def test_an_admin_deletes_a_conversation_and_the_audit_log_says_so(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    conversation = started(console_settings)
    with_lines(console_settings, conversation.id, "Hello Ana!")
    admin.get(f"/admin/conversations/{conversation.id}")
    answer = admin.post(f"/admin/conversations/{conversation.id}/delete")
    assert answer.status_code == 303
    assert admin.get(answer.headers["location"]).text.count("The conversation was deleted.") == 1
    assert admin.get(f"/admin/conversations/{conversation.id}").status_code == 404
    assert run_async(lambda: stored_transcript(console_settings, conversation.id)) == []

    async def entries() -> list[tuple[str, str, str, object]]:
        async with database(console_settings) as db:
            found = await audit.entries(db, AuditFilter(target_type="conversation"))
        return [(e.actor, e.action, e.target, e.before) for e in found]

    ((actor, action, target, before),) = run_async(entries)
    assert (actor, action, target) == ("admin@example.com", "delete", conversation.id)
    assert isinstance(before, dict) and before["flow"] == "demo" and before["transcript_lines"] == 1
    assert "Hello" not in json.dumps(before)
    assert admin.post(f"/admin/conversations/{conversation.id}/delete").status_code == 404


def test_a_viewer_reads_conversations_but_cannot_delete_them(
    viewer: ConsoleClient, console_settings: Settings
) -> None:
    conversation = started(console_settings)
    page = viewer.get(f"/admin/conversations/{conversation.id}")
    assert page.status_code == 200 and "Delete conversation" not in page.text
    assert viewer.post(f"/admin/conversations/{conversation.id}/delete").status_code == 403
    assert viewer.get(f"/admin/conversations/{conversation.id}").status_code == 200


def test_without_a_session_the_pages_send_to_sign_in(console: ServerThread) -> None:
    answer = httpx.get(f"{console.url}/admin/conversations/{'0' * 32}/transcript.json")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/sign-in")
