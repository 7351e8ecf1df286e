"""Reading conversations back: one by id, or filtered and keyset-paginated, newest first."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import Database
from server.errors import Invalid, NotFound
from server.models import Conversation, ConversationStatus, DppTemplate, DppTemplateVersion, Flow


@dataclass(frozen=True)
class ConversationFilter:
    flow: str | None = None
    status: ConversationStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    preview: bool | None = None  # None: both; the console tells admins' preview conversations apart


@dataclass(frozen=True)
class Listed:
    conversation: Conversation
    flow_slug: str


@dataclass(frozen=True)
class Detail:
    conversation: Conversation
    flow_slug: str
    template: dict[str, object] | None  # {"name", "version"} of the DPP template version it used


def encode_cursor(conversation: Conversation) -> str:
    raw = json.dumps([conversation.created_at.isoformat(), conversation.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, conversation_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:  # a cursor we issued always has an offset; naive ones fail in the query
            raise ValueError("naive datetime")
        # To UTC here: an offset that moves it before year 1 overflows now, not inside the database driver.
        return when.astimezone(UTC), str(conversation_id)
    except (ValueError, TypeError, OverflowError) as exc:
        raise Invalid("invalid_cursor", "the cursor is not one this API returned") from exc


def _query(filters: ConversationFilter) -> Select[Conversation, str]:
    query = select(Conversation, Flow.slug).join(Flow, Conversation.flow_id == Flow.id)
    if filters.flow:
        query = query.where(Flow.slug == filters.flow)
    if filters.status:
        query = query.where(Conversation.status == filters.status)
    if filters.since:
        query = query.where(Conversation.created_at >= filters.since)
    if filters.until:
        query = query.where(Conversation.created_at < filters.until)
    if filters.preview is not None:
        query = query.where(Conversation.preview.is_(filters.preview))
    return query


async def page_of(
    db: Database, filters: ConversationFilter, cursor: str | None, limit: int
) -> tuple[list[Listed], str | None]:
    """One page, newest first; the cursor keeps pages stable while conversations are added."""
    async with db.reading() as session:
        return await _page(session, filters, cursor, limit)


async def _page(
    session: AsyncSession, filters: ConversationFilter, cursor: str | None, limit: int
) -> tuple[list[Listed], str | None]:
    query = _query(filters)
    if cursor:
        created, conversation_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.created_at < created,
                and_(Conversation.created_at == created, Conversation.id < conversation_id),
            )
        )
    ordered = query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
    rows = [Listed(row[0], row[1]) for row in (await session.execute(ordered)).all()]
    next_cursor = encode_cursor(rows[limit - 1].conversation) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def each(session: AsyncSession, filters: ConversationFilter) -> AsyncIterator[Listed]:
    """Every matching conversation, a page at a time, within the caller's session."""
    cursor = None
    while True:
        rows, cursor = await _page(session, filters, cursor, 100)
        for row in rows:
            yield row
        if cursor is None:
            return


async def detail_of(db: Database, conversation_id: str) -> Detail:
    async with db.reading() as session:
        return await _detail(session, conversation_id)


async def _detail(session: AsyncSession, conversation_id: str) -> Detail:
    row = (
        await session.execute(
            select(Conversation, Flow.slug)
            .join(Flow, Conversation.flow_id == Flow.id)
            .where(Conversation.id == conversation_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("unknown_session", f"no session with id {conversation_id!r}")
    conversation = row[0]
    template = None
    if conversation.template_version_id is not None:
        named = (
            await session.execute(
                select(DppTemplate.name, DppTemplateVersion.version)
                .join(DppTemplate, DppTemplate.id == DppTemplateVersion.template_id)
                .where(DppTemplateVersion.id == conversation.template_version_id)
            )
        ).one_or_none()
        template = {"name": named[0], "version": named[1]} if named else None
    return Detail(conversation, row[1], template)
