"""Transcript ingest from pages and the REST API, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import re
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server import budgets
from server.app import create_app
from server.conversations.lifecycle import STOP_SENTENCES
from server.db import Database
from server.housekeeping import housekeeping_pass
from server.models import Conversation, TranscriptEntry, utcnow
from server.security.signing import PAGE_SESSION, Signer
from server.settings import Settings
from tests import factories
from tests.support import ServerThread, database, db_session, prepared_settings, with_database

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # each test moves it to its own start (see `_clock`)


@pytest.fixture(autouse=True)
def _clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines are timed from the test's start: page timestamps are clamped to the conversation's life."""
    monkeypatch.setattr(sys.modules[__name__], "T0", utcnow().replace(microsecond=0))


def open_page(server: ServerThread, slug: str = "demo") -> tuple[str, str]:
    html = httpx.get(f"{server.url}/a/{slug}").text
    config = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])
    return config["session"]["id"], config["session"]["token"]


def start_conversation(server: ServerThread, slug: str = "demo") -> str:
    """A page view whose visitor said something: the conversation exists from its first line."""
    session_id, token = open_page(server, slug)
    assert post(server, {"token": token, "entries": [entry(1)]}).status_code == 200
    return session_id


def entry(seq: int, role: str = "Avatar", text: str | None = None, offset: float = 0) -> dict[str, Any]:
    when = T0 + timedelta(seconds=seq + offset)
    return {"seq": seq, "role": role, "text": text or f"line {seq}", "timestamp": when.isoformat()}


def post(server: ServerThread, body: Any, content_type: str = "application/json") -> httpx.Response:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(
        f"{server.url}/api/v1/page/transcript", content=data, headers={"content-type": content_type}
    )


def stored_count(settings: Settings, session_id: str) -> int:
    async def count() -> int:
        async with db_session(settings) as db:
            query = select(func.count()).where(TranscriptEntry.conversation_id == session_id)
            return int((await db.execute(query)).scalar_one())

    return asyncio.run(count())


def make_token(settings: Settings, *scopes: str, revoked: bool = False) -> str:
    return with_database(settings, lambda db: factories.create_api_token(db, *scopes, revoked=revoked))


def add_relay_lines(settings: Settings, session_id: str, lines: list[tuple[int, str, str, float]]) -> None:
    """Lines as the relay tap stores them, `offset` seconds after the page's line of the same seq."""
    timed = [(seq, role, text, T0 + timedelta(seconds=seq + offset)) for seq, role, text, offset in lines]
    with_database(settings, lambda db: factories.add_transcript_lines(db, session_id, "relay", timed))


def test_a_retried_batch_stores_nothing_twice(live_server: ServerThread, settings: Settings) -> None:
    session_id, token = open_page(live_server)
    batch = {"token": token, "entries": [entry(1), entry(2, "User")]}
    first = post(live_server, batch)
    assert first.status_code == 200 and first.json() == {
        "stored": 2,
        "highest_seq": 2,
        "status": "active",
        "recorded": True,
        "message": None,
    }
    again = post(live_server, batch)
    assert again.json() == {
        "stored": 0,
        "highest_seq": 2,
        "status": "active",
        "recorded": True,
        "message": None,
    }
    assert stored_count(settings, session_id) == 2


def test_highest_seq_tells_the_page_what_to_resend(live_server: ServerThread) -> None:
    _, token = open_page(live_server)
    assert post(live_server, {"token": token, "entries": [entry(1), entry(3)]}).json()["highest_seq"] == 1
    assert post(live_server, {"token": token, "entries": [entry(2)]}).json()["highest_seq"] == 3


def test_final_flush_ends_the_session_and_lines_long_after_are_refused(
    live_server: ServerThread, settings: Settings
) -> None:
    session_id, token = open_page(live_server)
    assert (
        post(live_server, {"token": token, "entries": [entry(1)], "final": True}).json()["status"] == "ended"
    )
    assert post(live_server, {"token": token, "entries": [entry(1)]}).status_code == 200  # a retry is fine
    ended_at = utcnow() - timedelta(minutes=3)
    with_database(settings, lambda db: factories.age_conversation(db, session_id, ended_at=ended_at))
    late = post(live_server, {"token": token, "entries": [entry(2)]})
    assert late.status_code == 409 and late.json()["code"] == "session_ended"
    assert "ended more than 2 minutes ago" in late.json()["message"]
    assert stored_count(settings, session_id) == 1


def test_the_page_s_last_lines_land_after_an_end_it_did_not_see_coming(
    live_server: ServerThread, settings: Settings
) -> None:
    """An operator (or a budget, or the relay) ends the conversation while the page still holds lines: its
    final flush, seconds later, stores them, and the conversation stays ended for the operator's reason."""
    session_id, token = open_page(live_server)
    assert post(live_server, {"token": token, "entries": [entry(1)]}).status_code == 200
    with_database(settings, lambda db: budgets.end_conversation(db, session_id, "admin"))
    held = post(live_server, {"token": token, "entries": [entry(2, "User")]})  # the group commit's path
    assert held.status_code == 200, held.text
    assert held.json()["message"] == STOP_SENTENCES["ended_by_operator"]  # the page can tell its visitor why
    last = post(live_server, {"token": token, "entries": [entry(2, "User"), entry(3)], "final": True})
    assert last.status_code == 200, last.text
    assert last.json() == {
        "stored": 1,
        "highest_seq": 3,
        "status": "ended",
        "recorded": True,
        "message": STOP_SENTENCES["ended_by_operator"],
    }
    assert stored_count(settings, session_id) == 3

    async def reason() -> str | None:
        async with db_session(settings) as db:
            return await db.scalar(select(Conversation.end_reason).where(Conversation.id == session_id))

    assert asyncio.run(reason()) == "ended_by_operator"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"entries": [entry(1)]}, 400, "token"),
        ({"entries": [entry(1, text=" ")]}, 400, "blank"),
        ({"entries": [entry(1, text="x" * 100_000)]}, 400, "text"),
        ({"entries": [entry(i) for i in range(1, 10_001)]}, 400, "entries"),
        ({"entries": [entry(1), entry(1)]}, 400, "twice"),
        ({"entries": [entry(1), entry(2, text="a\u0000b")]}, 400, "NUL"),
        ({"entries": [{**entry(1), "role": "Narrator"}]}, 400, "role"),
        ({"entries": [entry(1), {**entry(2), "timestamp": "yesterday"}]}, 400, "timestamp"),
        ({"entries": [{**entry(1), "timestamp": "0001-01-01T00:00:00+00:01"}]}, 400, "outside the range"),
        ({"entries": [{**entry(1, "User"), "pronunciation_score": 101}]}, 400, "pronunciation_score"),
        ({"entries": [{**entry(1, "Avatar"), "pronunciation_score": 80}]}, 400, "User lines"),
    ],
)
def test_bad_batches_are_refused_whole_with_a_reason(
    live_server: ServerThread, settings: Settings, body: dict[str, Any], status: int, words: str
) -> None:
    session_id, token = open_page(live_server)
    response = post(live_server, {"token": token, **body} if "token" not in words else body)
    assert response.status_code == status
    assert words in response.json()["message"]
    assert stored_count(settings, session_id) == 0


def test_forged_expired_and_unknown_tokens(live_server: ServerThread, settings: Settings) -> None:
    _, token = open_page(live_server)
    forged = post(live_server, {"token": token[:-3] + "abc", "entries": [entry(1)]})
    assert forged.status_code == 401 and forged.json()["code"] == "token_invalid"
    signer = Signer(settings.secret)
    expired = signer.sign(PAGE_SESSION, {"sid": "x"}, ttl_seconds=60, now=0)
    assert post(live_server, {"token": expired, "entries": [entry(1)]}).json()["code"] == "token_expired"
    not_a_page_token = signer.sign(PAGE_SESSION, {"sid": "no-such-session"}, ttl_seconds=60)
    assert post(live_server, {"token": not_a_page_token, "entries": [entry(1)]}).status_code == 401
    unknown_flow = signer.sign(PAGE_SESSION, {"sid": "s", "flow": "no-such-flow"}, ttl_seconds=60)
    answer = post(live_server, {"token": unknown_flow, "entries": [entry(1)]})
    assert answer.status_code == 404 and answer.json()["code"] == "flow_unavailable"


def test_an_empty_batch_starts_no_conversation(live_server: ServerThread, settings: Settings) -> None:
    session_id, token = open_page(live_server)
    # What a page left without a word sends from `pagehide`.
    answer = post(live_server, {"token": token, "entries": [], "final": True})
    assert answer.json() == {
        "stored": 0,
        "highest_seq": 0,
        "status": "not_started",
        "recorded": True,
        "message": None,
    }
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    assert httpx.get(f"{live_server.url}/api/v1/sessions/{session_id}", headers=auth).status_code == 404


def test_non_json_wrong_type_and_oversized_bodies(live_server: ServerThread) -> None:
    assert post(live_server, "{not json").status_code == 400
    assert post(live_server, '{"token": "x", "entries": []}', "text/plain").status_code == 415
    assert post(live_server, b"x" * (2 * 1024 * 1024)).status_code == 413


def test_api_requires_a_valid_scoped_token(live_server: ServerThread, settings: Settings) -> None:
    url = f"{live_server.url}/api/v1/sessions"
    assert httpx.get(url).json()["code"] == "missing_token"
    assert httpx.get(url, headers={"authorization": "Bearer abff_00000000_nope"}).status_code == 401
    revoked = make_token(settings, "transcripts:read", revoked=True)
    assert httpx.get(url, headers={"authorization": f"Bearer {revoked}"}).json()["code"] == "revoked_token"
    reader = make_token(settings, "transcripts:read")
    assert httpx.get(url, headers={"authorization": f"Bearer {reader}"}).status_code == 200
    erase = httpx.delete(f"{url}/whatever", headers={"authorization": f"Bearer {reader}"})
    assert erase.status_code == 403 and erase.json()["code"] == "insufficient_scope"


def test_transcript_merges_page_and_relay_lines(live_server: ServerThread, settings: Settings) -> None:
    session_id, token = open_page(live_server)
    post(live_server, {"token": token, "entries": [entry(1, "Avatar", "Hello Ana!"), entry(2, "User", "Hi")]})
    add_relay_lines(
        settings,
        session_id,
        [(1, "Avatar", "Hello Ana!", 0.4), (2, "User", "hi", 0.3), (3, "Avatar", "Ending call now.", 0)],
    )
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    body = httpx.get(f"{live_server.url}/api/v1/sessions/{session_id}/transcript", headers=auth).json()
    assert [(e["seq"], e["role"], e["text"], e["sources"]) for e in body["entries"]] == [
        (1, "Avatar", "Hello Ana!", ["page", "relay"]),
        (2, "User", "hi", ["page", "relay"]),  # the relay's wording: the page's is the visitor's to change
        (3, "Avatar", "Ending call now.", ["relay"]),
    ]
    text = httpx.get(
        f"{live_server.url}/api/v1/sessions/{session_id}/transcript?format=text", headers=auth
    ).text
    assert text == "Avatar: Hello Ana!\nUser: hi\nAvatar: Ending call now."
    markdown = httpx.get(
        f"{live_server.url}/api/v1/sessions/{session_id}/transcript",
        params={"format": "markdown", "timestamps": "true"},
        headers=auth,
    ).text
    first_at = (T0 + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert markdown.startswith(f"[{first_at}] **Avatar:** Hello Ana!\n\n")


def test_pronunciation_scores_reach_the_api_and_exports(
    live_server: ServerThread, settings: Settings
) -> None:
    session_id, token = open_page(live_server, "demo-iframe")
    scored = {**entry(2, "User", "I would like a coffee"), "pronunciation_score": 87}
    assert post(live_server, {"token": token, "entries": [entry(1), scored, entry(3)]}).status_code == 200
    # The relay heard the same User line: the merged line keeps the page's score.
    add_relay_lines(settings, session_id, [(1, "User", "I would like a coffee.", 1.5)])
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    body = httpx.get(f"{live_server.url}/api/v1/sessions/{session_id}/transcript", headers=auth).json()
    assert [(e["role"], e["pronunciation_score"], e["sources"]) for e in body["entries"]] == [
        ("Avatar", None, ["page"]),
        ("User", 87, ["page", "relay"]),
        ("Avatar", None, ["page"]),
    ]
    exported = httpx.get(
        f"{live_server.url}/api/v1/export", params={"format": "csv", "flow": "demo-iframe"}, headers=auth
    ).text
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [row["pronunciation_score"] for row in rows] == ["", "87", ""]


def test_sessions_list_filters_and_paginates(live_server: ServerThread, settings: Settings) -> None:
    ids = [start_conversation(live_server) for _ in range(5)] + [
        start_conversation(live_server, "demo-iframe")
    ]
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"flow": "demo", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{live_server.url}/api/v1/sessions", params=params, headers=auth).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids[:5]) and len(seen) == 5
    detail = httpx.get(f"{live_server.url}/api/v1/sessions/{ids[0]}", headers=auth).json()
    assert detail["dpp_template"] == {"name": "demo-welcome", "version": 1}
    bad = httpx.get(f"{live_server.url}/api/v1/sessions", params={"cursor": "garbage"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


def test_time_filters_outside_the_utc_calendar_are_refused_by_name(
    live_server: ServerThread, settings: Settings
) -> None:
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    for path in ("/api/v1/sessions", "/api/v1/export"):
        # Valid ISO 8601, but one minute before year 1 once in UTC (found by the schema fuzzer: it was a 500).
        answer = httpx.get(
            f"{live_server.url}{path}", params={"until": "0001-01-01T00:00:00+00:01"}, headers=auth
        )
        assert answer.status_code == 400, answer.text
        assert "until" in answer.text and "outside the range of dates" in answer.text
    edge = httpx.get(
        f"{live_server.url}/api/v1/sessions", params={"since": "0001-01-01T00:00:00Z"}, headers=auth
    )
    assert edge.status_code == 200


def test_erasure_removes_session_and_transcript(live_server: ServerThread, settings: Settings) -> None:
    session_id, token = open_page(live_server)
    post(live_server, {"token": token, "entries": [entry(1)]})
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read', 'transcripts:delete')}"}
    assert httpx.delete(f"{live_server.url}/api/v1/sessions/{session_id}", headers=auth).status_code == 204
    assert httpx.get(f"{live_server.url}/api/v1/sessions/{session_id}", headers=auth).status_code == 404
    assert stored_count(settings, session_id) == 0


def test_an_erased_conversation_is_not_started_again_by_its_open_page(
    live_server: ServerThread, settings: Settings
) -> None:
    session_id, token = open_page(live_server, "demo-iframe")
    post(live_server, {"token": token, "entries": [entry(1)]})
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read', 'transcripts:delete')}"}
    assert httpx.delete(f"{live_server.url}/api/v1/sessions/{session_id}", headers=auth).status_code == 204
    # The visitor's page is still open and still holds a valid token.
    late = post(live_server, {"token": token, "entries": [entry(2)]})
    assert late.status_code == 409 and late.json()["code"] == "conversation_erased"
    assets = httpx.get(f"{live_server.url}/relay/iframe/clients/{token}/flow/demo-iframe/sdk-assets")
    assert assets.status_code == 409 and assets.json()["code"] == "conversation_erased"
    assert httpx.get(f"{live_server.url}/api/v1/sessions/{session_id}", headers=auth).status_code == 404
    assert stored_count(settings, session_id) == 0

    async def forget() -> None:
        db = Database(settings.effective_database_url)
        try:  # once no token naming it can be valid, the erased id is forgotten
            await housekeeping_pass(db, timedelta(minutes=30), timedelta(0))
        finally:
            await db.dispose()

    asyncio.run(forget())
    assert post(live_server, {"token": token, "entries": [entry(2)]}).status_code == 200


def test_export_streams_ndjson_and_csv(live_server: ServerThread, settings: Settings) -> None:
    session_id, token = open_page(live_server)
    post(live_server, {"token": token, "entries": [entry(1, text='Say "hi", please'), entry(2, "User")]})
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    ndjson = httpx.get(f"{live_server.url}/api/v1/export", headers=auth).text.splitlines()
    record = next(json.loads(line) for line in ndjson if json.loads(line)["id"] == session_id)
    assert [e["text"] for e in record["entries"]] == ['Say "hi", please', "line 2"]
    rows = list(
        csv.reader(io.StringIO(httpx.get(f"{live_server.url}/api/v1/export?format=csv", headers=auth).text))
    )
    assert rows[0][:4] == ["session_id", "flow", "seq", "role"]
    assert [session_id, "demo", "1", "Avatar", 'Say "hi", please'] == rows[1][:5]


def test_openapi_documents_v1_and_docs_page_is_self_hosted(live_server: ServerThread) -> None:
    spec = httpx.get(f"{live_server.url}/api/openapi.json").json()
    assert {"/api/v1/sessions", "/api/v1/sessions/{session_id}/transcript", "/api/v1/page/transcript"} <= set(
        spec["paths"]
    )
    docs = httpx.get(f"{live_server.url}/api/docs")
    assert docs.status_code == 200
    assert re.search(r'src="/static/v/[0-9a-f]+/vendor/swagger-ui/swagger-ui-bundle.js"', docs.text)
    assert "https://" not in docs.headers["content-security-policy"]


def test_each_operation_documents_only_the_errors_it_can_give(live_server: ServerThread) -> None:
    paths = httpx.get(f"{live_server.url}/api/openapi.json").json()["paths"]

    def documented(path: str, method: str) -> set[str]:
        return {status for status in paths[path][method]["responses"] if status.startswith(("4", "5"))}

    assert documented("/api/v1/page/transcript", "post") == {
        "400",
        "401",
        "404",
        "409",
        "413",
        "415",
        "429",
        "503",
    }
    assert documented("/api/v1/sessions", "get") == {"400", "401", "403"}
    assert documented("/api/v1/sessions/{session_id}", "get") == {"400", "401", "403", "404"}
    assert documented("/api/v1/sessions/{session_id}", "delete") == {"401", "403", "404"}
    assert "422" not in str(paths)  # validation errors are answered as 400, and documented so


def test_housekeeping_ends_idle_sessions_and_applies_retention(settings: Settings) -> None:
    async def scenario() -> tuple[tuple[int, int], dict[str, str | None]]:
        signer = Signer(settings.secret)
        async with database(settings) as db:
            await factories.change_flow(db, "demo", retention_days=30)
            idle, fresh, ancient = [(await factories.start_conversation(db, signer)).id for _ in range(3)]
            now, old = utcnow(), utcnow() - timedelta(days=40)
            await factories.age_conversation(db, idle, last_activity_at=now - timedelta(hours=2))
            await factories.age_conversation(db, ancient, created_at=old, last_activity_at=old, ended_at=old)
            counts = await housekeeping_pass(db, timedelta(minutes=30), timedelta(hours=2))
            async with db.reading() as session:
                rows = (await session.execute(select(Conversation.id, Conversation.status))).all()
        names = {idle: "idle", fresh: "fresh", ancient: "ancient"}
        return counts, {names[row[0]]: row[1] for row in rows}

    counts, statuses = asyncio.run(scenario())
    assert counts == (1, 1)  # one ended for idleness, one deleted for its age
    assert statuses == {"fresh": "active", "idle": "ended"}


@pytest.mark.parametrize("created", ["2026-05-01T12:00:00", "0001-01-01T00:00:00+00:01", "not a date", 5])
def test_forged_cursors_are_refused_by_name(
    live_server: ServerThread, settings: Settings, created: object
) -> None:
    # A naive time, or one that falls before year 1 in UTC, used to fail inside the query: a 500.
    raw = json.dumps([created, "some-id"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    bad = httpx.get(f"{live_server.url}/api/v1/sessions", params={"cursor": cursor}, headers=auth)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor", bad.text


def test_csv_export_neutralises_spreadsheet_formulas(live_server: ServerThread, settings: Settings) -> None:
    session_id, token = open_page(live_server)
    texts = ['=HYPERLINK("http://evil.example","click")', "@SUM(A1:A9)", "+1+1", "-2+3", "\tx=1", "ok = fine"]
    lines = [entry(seq, "User", text) for seq, text in enumerate(texts, start=1)]
    assert post(live_server, {"token": token, "entries": lines}).status_code == 200
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    exported = httpx.get(f"{live_server.url}/api/v1/export", params={"format": "csv"}, headers=auth).text
    cells = [row["text"] for row in csv.DictReader(io.StringIO(exported)) if row["session_id"] == session_id]
    # A spreadsheet shows a leading quote's cell as text; nothing else is changed.
    assert cells == ["'" + text for text in texts[:-1]] + ["ok = fine"]


def test_a_session_transcript_is_capped_in_lines_and_bytes(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, transcript_max_lines=6, transcript_max_bytes=64 * 1024)
    with ServerThread(create_app(settings)) as server:
        session_id, token = open_page(server)
        assert post(server, {"token": token, "entries": [entry(n) for n in (1, 2, 3, 4)]}).status_code == 200
        over = post(server, {"token": token, "entries": [entry(n) for n in (5, 6, 7)]})
        assert over.status_code == 413 and over.json()["code"] == "transcript_too_long"
        assert "6 lines" in over.json()["message"]
        assert stored_count(settings, session_id) == 4  # the batch is refused whole
        assert post(server, {"token": token, "entries": [entry(n) for n in (1, 5, 6)]}).status_code == 200

        # Bytes, not characters: three lines of 10,000 "é" are 60,000 bytes, a fourth goes over 64 KiB.
        other_id, other = open_page(server)
        wide = [entry(n, text="é" * 10_000) for n in (1, 2, 3, 4)]
        assert post(server, {"token": other, "entries": wide[:3]}).status_code == 200
        too_big = post(server, {"token": other, "entries": wide[3:]})
        assert too_big.status_code == 413 and "65536 bytes" in too_big.json()["message"]
        assert stored_count(settings, other_id) == 3


def test_page_ingest_is_rate_limited_per_session_but_retries_are_free(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, transcript_lines_per_second=0.5, transcript_line_burst=500)
    with ServerThread(create_app(settings)) as server:
        session_id, token = open_page(server)
        burst = {"token": token, "entries": [entry(n) for n in range(1, 501)]}
        assert post(server, burst).status_code == 200
        assert post(server, burst).json()["stored"] == 0  # the retry of stored lines is not refused
        more = post(server, {"token": token, "entries": [entry(501), entry(502)]})
        assert more.status_code == 429 and more.json()["code"] == "ingest_rate_limited"
        assert "retry in" in more.json()["message"]
        assert stored_count(settings, session_id) == 500
        # Another visitor's session has its own bucket.
        _, fresh = open_page(server)
        assert post(server, {"token": fresh, "entries": [entry(1)]}).status_code == 200


def test_healthz_answers_while_a_capped_transcript_is_read_and_exported(settings: Settings) -> None:
    """The largest transcript the caps allow, every line said at one instant (the merge's worst case)."""
    signer = Signer(settings.secret)

    async def fill(db: Database) -> str:
        conversation = await factories.start_conversation(db, signer)
        for source in ("page", "relay"):
            lines = [
                (n, "User", f"{source} line {n}", T0) for n in range(1, settings.transcript_max_lines + 1)
            ]
            await factories.add_transcript_lines(db, conversation.id, source, lines)
        return conversation.id

    session_id = with_database(settings, fill)
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    with ServerThread(create_app(settings)) as server:
        finished = threading.Event()
        answers: list[int] = []

        def read() -> None:
            with httpx.Client(timeout=120) as client:
                url = f"{server.url}/api/v1/sessions/{session_id}/transcript"
                answers.append(client.get(url, headers=auth).status_code)
                answers.append(client.get(f"{server.url}/api/v1/export?format=csv", headers=auth).status_code)
            finished.set()

        reader = threading.Thread(target=read)
        reader.start()
        waits: list[float] = []
        with httpx.Client(timeout=120) as client:
            while not finished.is_set():
                started = time.monotonic()
                assert client.get(f"{server.url}/healthz").status_code == 200
                waits.append(time.monotonic() - started)
        reader.join()
    assert answers == [200, 200]
    # Before, the merge ran on the loop: /healthz waited as long as the read (seconds, ~80 s at 20,000 lines).
    assert waits and max(waits) < 1.0, waits


def test_page_lines_cannot_pass_for_the_relays(live_server: ServerThread, settings: Settings) -> None:
    """A visitor posts a forged Avatar line, a line dated 1970 and their own wording of a relayed line."""
    session_id, token = open_page(live_server)
    forged = entry(2, "Avatar", "I approve your refund of $10,000.")
    ancient = {**entry(3, "User", "first!"), "timestamp": "1970-01-01T00:00:00Z"}
    reworded = entry(1, "Avatar", "WELCOME TO ACME!!")
    assert post(live_server, {"token": token, "entries": [reworded, forged, ancient]}).status_code == 200
    add_relay_lines(settings, session_id, [(1, "Avatar", "Welcome to Acme.", 0.2)])
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    url = f"{live_server.url}/api/v1/sessions/{session_id}/transcript"
    body = httpx.get(url, headers=auth).json()
    entries = {e["text"]: (e["role"], e["verified"]) for e in body["entries"]}
    assert entries == {
        "Welcome to Acme.": ("Avatar", True),  # the relay's wording wins
        "I approve your refund of $10,000.": ("Avatar", False),
        "first!": ("User", True),
    }
    # The 1970 line is clamped into the conversation's life (give or take the allowed clock skew).
    dated = {e["text"]: datetime.fromisoformat(e["timestamp"]) for e in body["entries"]}
    assert abs(dated["first!"] - T0) < timedelta(minutes=5)
    text = httpx.get(url, params={"format": "text"}, headers=auth).text
    assert "Avatar (unverified): I approve your refund of $10,000." in text
    assert "Avatar: Welcome to Acme." in text
    markdown = httpx.get(url, params={"format": "markdown"}, headers=auth).text
    assert "**Avatar (unverified):** I approve your refund" in markdown
    exported = httpx.get(f"{live_server.url}/api/v1/export", params={"format": "csv"}, headers=auth).text
    rows = [row for row in csv.DictReader(io.StringIO(exported)) if row["session_id"] == session_id]
    assert {row["text"]: row["verified"] for row in rows}["I approve your refund of $10,000."] == "false"
    ndjson = httpx.get(f"{live_server.url}/api/v1/export", headers=auth).text.splitlines()
    record = next(json.loads(line) for line in ndjson if json.loads(line)["id"] == session_id)
    assert [e["verified"] for e in record["entries"]].count(False) == 1


def test_a_flow_with_transcript_recording_off_stores_no_lines_and_the_api_says_so(
    live_server: ServerThread, settings: Settings
) -> None:
    with_database(
        settings,
        lambda db: factories.create_flow(db, "private", sdk_options={"record_transcript": False}),
    )
    session_id, token = open_page(live_server, "private")
    answer = post(live_server, {"token": token, "entries": [entry(1), entry(2, "User", "my card number")]})
    assert answer.status_code == 200
    assert answer.json() == {
        "stored": 0,
        "highest_seq": 2,
        "status": "active",
        "recorded": False,
        "message": None,
    }
    assert stored_count(settings, session_id) == 0
    auth = {"authorization": f"Bearer {make_token(settings, 'transcripts:read')}"}
    url = f"{live_server.url}/api/v1/sessions/{session_id}/transcript"
    body = httpx.get(url, headers=auth).json()
    assert body == {"session_id": session_id, "recorded": False, "entries": []}
    assert "recording is off" in httpx.get(url, params={"format": "text"}, headers=auth).text
    final = post(live_server, {"token": token, "entries": [], "final": True})
    assert final.json()["status"] == "ended"  # the call itself is still tracked
