"""Markup stored in any field (flow, template, transcript, token, audit entry, visitor context) reaches every
console page as text: a crawl of every page an admin can reach finds the payloads only escaped."""

from __future__ import annotations

import re
from urllib.parse import urljoin

from server import audit
from server.db import Database
from server.models import utcnow
from server.security.signing import Signer
from server.settings import Settings
from tests.admin.console_client import ConsoleClient
from tests.factories import add_transcript_lines, create_api_token, create_flow, start_conversation
from tests.support import with_database

PAYLOADS = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "</textarea><b>bold</b>",
)
MARKED = " ".join(PAYLOADS)
SKIP = ("/download", "/sign-out", ".json", ".md", ".txt")


async def seed(db: Database, settings: Settings) -> None:
    await create_flow(
        db,
        "xss",
        display_name=f"Flow {MARKED}",
        template_body={"greeting": f"Hi {MARKED}", "name": "{{ visitor.first_name }}"},
    )
    started = await start_conversation(
        db,
        Signer(settings.secret),
        "xss",
        visitor={"first_name": PAYLOADS[1]},
        page_url="http://127.0.0.1/a/xss",
    )
    await add_transcript_lines(
        db, started.id, "page", [(i, "User", p, utcnow()) for i, p in enumerate(PAYLOADS)]
    )
    await create_api_token(db, "transcripts:read", name=f"token {PAYLOADS[0]}")
    async with db.transaction() as session:
        audit.record(
            session, f"ops{PAYLOADS[2]}@example.com", "update", "flow", "xss", {"a": MARKED}, {"b": MARKED}
        )


def test_stored_markup_is_inert_on_every_console_page(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    with_database(console_settings, lambda db: seed(db, console_settings))
    seen: set[str] = set()
    queue = ["/admin"]
    while queue and len(seen) < 80:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        page = admin.get(path)
        assert page.status_code == 200, (path, page.status_code)
        for payload in PAYLOADS:
            assert payload not in page.text, (path, payload)
        for href in re.findall(r'href="([^"]+)"', page.text):
            target = urljoin(f"http://x{path}", href.replace("&amp;", "&"))
            if target.startswith("http://x/admin") and not any(s in target for s in SKIP):
                queue.append(target.removeprefix("http://x"))
    # The crawl reached the pages that show what was seeded.
    assert any(p.startswith("/admin/flows/") for p in seen), seen
    assert any(p.startswith("/admin/conversations/") for p in seen), seen
    assert any(p.startswith("/admin/templates/") for p in seen), seen
