"""Reading, listing, erasing and expiring sessions and their canonical transcripts."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import ServiceError
from server.models import DppTemplate, DppTemplateVersion, Flow, Session, TranscriptEntry
from server.transcripts.merge import CanonicalEntry, SourceEntry, merge


async def canonical_transcript(db: AsyncSession, session_id: str) -> list[CanonicalEntry]:
    # Plain rows, not ORM objects: a long transcript loads several times faster.
    e = TranscriptEntry
    rows = await db.execute(
        select(e.source, e.seq, e.role, e.text, e.timestamp, e.pronunciation_score).where(
            e.session_id == session_id
        )
    )
    return merge([SourceEntry(*row) for row in rows])


async def get_session(db: AsyncSession, session_id: str) -> tuple[Session, Flow]:
    row = (
        await db.execute(
            select(Session, Flow).join(Flow, Session.flow_id == Flow.id).where(Session.id == session_id)
        )
    ).one_or_none()
    if row is None:
        raise ServiceError(404, "unknown_session", f"no session with id {session_id!r}")
    return row[0], row[1]


async def template_version_of(db: AsyncSession, session: Session) -> dict[str, object] | None:
    if session.template_version_id is None:
        return None
    row = (
        await db.execute(
            select(DppTemplate.name, DppTemplateVersion.version)
            .join(DppTemplate, DppTemplate.id == DppTemplateVersion.template_id)
            .where(DppTemplateVersion.id == session.template_version_id)
        )
    ).one_or_none()
    return {"name": row[0], "version": row[1]} if row else None


@dataclass(frozen=True)
class SessionFilter:
    flow: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(session: Session) -> str:
    raw = json.dumps([session.created_at.isoformat(), session.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, session_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(session_id)
    except (ValueError, TypeError) as exc:
        raise ServiceError(400, "invalid_cursor", "the cursor is not one this API returned") from exc


async def list_sessions(
    db: AsyncSession, filters: SessionFilter, cursor: str | None, limit: int
) -> tuple[list[tuple[Session, Flow]], str | None]:
    """Newest first, keyset-paginated so pages stay stable while sessions are added."""
    query = select(Session, Flow).join(Flow, Session.flow_id == Flow.id)
    if filters.flow:
        query = query.where(Flow.slug == filters.flow)
    if filters.status:
        query = query.where(Session.status == filters.status)
    if filters.since:
        query = query.where(Session.created_at >= filters.since)
    if filters.until:
        query = query.where(Session.created_at < filters.until)
    if cursor:
        created, session_id = decode_cursor(cursor)
        query = query.where(
            or_(Session.created_at < created, and_(Session.created_at == created, Session.id < session_id))
        )
    rows = [
        (r[0], r[1])
        for r in (
            await db.execute(query.order_by(Session.created_at.desc(), Session.id.desc()).limit(limit + 1))
        ).all()
    ]
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def iterate_sessions(db: AsyncSession, filters: SessionFilter) -> AsyncIterator[tuple[Session, Flow]]:
    cursor = None
    while True:
        rows, cursor = await list_sessions(db, filters, cursor, 100)
        for row in rows:
            yield row
        if cursor is None:
            return


async def erase_session(db: AsyncSession, session_id: str) -> None:
    """Delete a session and every transcript line of it (right to erasure)."""
    await get_session(db, session_id)
    await db.execute(delete(TranscriptEntry).where(TranscriptEntry.session_id == session_id))
    await db.execute(delete(Session).where(Session.id == session_id))
    await db.commit()


async def expire_and_purge(db: AsyncSession, now: datetime, idle_after: timedelta) -> tuple[int, int]:
    """End sessions idle for too long; delete sessions older than their flow's retention. Returns counts."""
    ended = await db.execute(
        update(Session)
        .where(Session.status.in_(["created", "active"]), Session.last_activity_at < now - idle_after)
        .values(status="ended", end_reason="idle_timeout", ended_at=now)
    )
    purged = 0
    flows = (
        await db.execute(select(Flow.id, Flow.retention_days).where(Flow.retention_days.is_not(None)))
    ).all()
    for flow_id, days in flows:
        old = select(Session.id).where(
            Session.flow_id == flow_id, Session.created_at < now - timedelta(days=days or 0)
        )
        ids = list((await db.execute(old)).scalars())
        if ids:
            await db.execute(delete(TranscriptEntry).where(TranscriptEntry.session_id.in_(ids)))
            await db.execute(delete(Session).where(Session.id.in_(ids)))
            purged += len(ids)
    await db.commit()
    return ended.rowcount, purged  # type: ignore[attr-defined]
