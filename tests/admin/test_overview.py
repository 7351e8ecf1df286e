"""The overview: conversations and minutes per flow and day, how they ended, the latest refusals and errors,
counted in SQL on SQLite and PostgreSQL, with previews left out."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update

from server.conversations import lifecycle, statistics, timeline
from server.db import Database
from server.models import Conversation
from server.security.signing import Signer
from server.settings import Settings
from tests import factories
from tests.admin.console_client import ConsoleClient
from tests.support import run_async

TODAY = date(2026, 11, 30)


def at(days_ago: int, clock: str) -> datetime:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    day = TODAY - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hours, minutes, seconds, tzinfo=UTC)


async def seed(settings: Settings) -> dict[str, str]:
    """Conversations of both demo flows, started, aged and ended as the services do it."""
    db, signer = Database(settings.effective_database_url), Signer(settings.secret)
    ids: dict[str, str] = {}

    async def conversation(
        name: str,
        flow: str,
        start: datetime,
        end: datetime | None,
        reason: str | None,
        active_until: datetime | None = None,
    ) -> str:
        started = await factories.start_conversation(db, signer, flow)
        ids[name] = started.id
        await factories.age_conversation(
            db, started.id, created_at=start, last_activity_at=active_until or start
        )
        if end is not None:
            async with db.transaction() as session:
                await lifecycle.end_by_id(session, {started.id: reason or "page_closed"}, end)
        return started.id

    try:
        await conversation("visitor", "demo", at(0, "10:00:00"), at(0, "10:05:00"), "page_closed")
        await conversation("time", "demo", at(0, "11:00:00"), at(0, "11:02:30"), "time_expired")
        # Started just before midnight: counted on the day it started.
        await conversation("idle", "demo", at(3, "23:59:30"), at(2, "00:01:30"), "idle_timeout")
        await conversation("active", "demo", at(1, "09:00:00"), None, None, active_until=at(1, "09:01:00"))
        refused = await conversation("refused", "demo", at(2, "08:00:00"), at(2, "08:30:00"), "idle_timeout")
        preview = await conversation("preview", "demo", at(0, "12:00:00"), at(0, "12:10:00"), "page_closed")
        await conversation("too_old", "demo", at(30, "12:00:00"), at(30, "12:01:00"), "page_closed")
        await conversation(
            "phrase", "demo-iframe", at(29, "00:00:00"), at(29, "00:10:00"), "conversation_ended"
        )
        async with db.transaction() as session:
            await session.execute(update(Conversation).where(Conversation.id == preview).values(preview=True))
            await timeline.record(session, refused, "relay_connect", {}, at(2, "08:00:01"))
            await timeline.record(
                session, refused, "refused", {"reason": "upstream_timeout"}, at(2, "08:00:03")
            )
            await timeline.record(session, preview, "refused", {"reason": "capacity"}, at(0, "12:00:01"))
            await timeline.record(session, ids["phrase"], "sdk_error", {"code": "4001"}, at(29, "00:05:00"))
    finally:
        await db.dispose()
    return ids


def test_usage_per_flow_and_day_and_endings_match_the_seeded_conversations(backend: Settings) -> None:
    ids = run_async(lambda: seed(backend))

    async def read() -> tuple[statistics.Usage, list[timeline.Problem]]:
        db = Database(backend.effective_database_url)
        try:
            return await statistics.usage(db, TODAY), await timeline.latest_problems(db)
        finally:
            await db.dispose()

    usage, problems = run_async(read)
    assert usage.days[0] == TODAY - timedelta(days=29) and usage.days[-1] == TODAY and len(usage.days) == 30
    demo, iframe = (next(f for f in usage.flows if f.slug == slug) for slug in ("demo", "demo-iframe"))
    daily = {
        day: (demo.conversations[i], demo.minutes[i])
        for i, day in enumerate(usage.days)
        if demo.conversations[i]
    }
    assert daily == {
        TODAY: (2, 7.5),  # 5 min and 2.5 min; the preview is left out
        TODAY - timedelta(days=1): (1, 1.0),  # active: up to its last activity
        TODAY - timedelta(days=2): (1, 30.0),
        TODAY - timedelta(days=3): (1, 2.0),
    }
    assert (demo.total_conversations, demo.total_minutes) == (5, 40.5)
    assert (iframe.conversations[0], iframe.minutes[0], iframe.total_conversations) == (1, 10.0, 1)
    assert dict(demo.endings) == {
        "visitor_ended": 1,
        "time_limit": 1,
        "abandoned": 1,
        "active": 1,
        "refused": 1,
    }
    assert dict(iframe.endings) == {"end_phrase": 1}
    assert [(p.flow_slug, p.kind, p.detail, p.conversation_id) for p in problems] == [
        ("demo", "refused", {"reason": "upstream_timeout"}, ids["refused"]),
        ("demo-iframe", "sdk_error", {"code": "4001"}, ids["phrase"]),
    ]


def test_the_overview_page_shows_the_numbers_in_tables_and_feeds_the_charts(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    signer = Signer(console_settings.secret)

    async def one_today() -> factories.StartedConversation:
        db = Database(console_settings.effective_database_url)
        try:
            conversation = await factories.start_conversation(db, signer)
            now = datetime.now(UTC)
            await factories.age_conversation(
                db, conversation.id, created_at=now - timedelta(minutes=4), ended_at=now
            )
            async with db.transaction() as session:
                await timeline.record(session, conversation.id, "refused", {"reason": "capacity"})
            return conversation
        finally:
            await db.dispose()

    conversation = run_async(one_today)
    page = admin.get("/admin")
    assert page.status_code == 200
    totals = page.text.split("Totals per flow")[1].split("</table>")[0]
    demo_row = re.search(r"Demo[^<]*<span[^>]*>demo</span></th><td>(\d+)</td><td>([\d.]+)</td>", totals)
    assert demo_row and demo_row.groups() == ("1", "4.0")
    assert 'id="overview-data"' in page.text and '"conversations": [0' in page.text
    assert "vendor/chart.js/chart.umd.min.js" in page.text and "admin/overview.js" in page.text
    endings = page.text.split('id="endings"')[1].split("</table>")[0]
    assert "Refused" in endings and "Visitor ended" in endings
    problems = page.text.split('id="problems"')[1].split("</table>")[0]
    assert "capacity" in problems and f"/admin/conversations/{conversation.id}" in problems
