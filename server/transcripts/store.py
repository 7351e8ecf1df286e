"""Reading canonical transcripts: one conversation's, or every matching conversation's for an export."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import audit
from server.conversations import lifecycle, listing
from server.conversations.listing import ConversationFilter, Listed
from server.db import Database
from server.errors import NotFound
from server.models import Conversation, Flow, TranscriptEntry
from server.sdk_options import stored_options
from server.transcripts.merge import CanonicalEntry, SourceEntry, merge


async def _canonical(session: AsyncSession, conversation_id: str) -> list[CanonicalEntry]:
    # Plain rows, not ORM objects: a long transcript loads several times faster.
    e = TranscriptEntry
    rows = (
        await session.execute(
            select(e.source, e.seq, e.role, e.text, e.timestamp, e.pronunciation_score).where(
                e.conversation_id == conversation_id
            )
        )
    ).all()
    # Off the event loop: a capped transcript still takes a while, and the relay shares the loop.
    return await asyncio.to_thread(_merge_rows, rows)


def _merge_rows(rows: Sequence[Any]) -> list[CanonicalEntry]:
    return merge([SourceEntry(*row) for row in rows])


async def transcript_of(db: Database, conversation_id: str) -> list[CanonicalEntry]:
    """Each line once, in order, with the sources that reported it; NotFound for an unknown conversation."""
    async with db.reading() as session:
        if await session.get(Conversation, conversation_id) is None:
            raise NotFound("unknown_session", f"no session with id {conversation_id!r}")
        return await _canonical(session, conversation_id)


async def recorded(db: Database, conversation_id: str) -> bool:
    """Whether the conversation's flow keeps transcripts (a flow with recording off stores none)."""
    async with db.reading() as session:
        options = await session.scalar(
            select(Flow.sdk_options)
            .join(Conversation, Conversation.flow_id == Flow.id)
            .where(Conversation.id == conversation_id)
        )
    return stored_options(options).record_transcript


async def export(
    db: Database, filters: ConversationFilter
) -> AsyncIterator[tuple[Listed, list[CanonicalEntry]]]:
    """Every matching conversation with its transcript, newest first, read in one session."""
    async with db.reading() as session:
        async for row in listing.each(session, filters):
            yield row, await _canonical(session, row.conversation.id)


async def erase_audited(db: Database, conversation_id: str, actor: str) -> None:
    """Erase a conversation from the console; its audit entry (what it was, never what it said) commits
    with the erasure."""
    async with db.transaction() as session:
        found = (
            await session.execute(
                select(Conversation.created_at, Conversation.status, Conversation.preview, Flow.slug)
                .join(Flow, Flow.id == Conversation.flow_id)
                .where(Conversation.id == conversation_id)
            )
        ).one_or_none()
        lines = await session.scalar(
            select(func.count()).where(TranscriptEntry.conversation_id == conversation_id)
        )
        await lifecycle.erase_in(session, conversation_id)
        assert found is not None  # erase_in refused an unknown id
        created, status, preview, flow = found
        before = {
            "flow": flow,
            "created_at": created.isoformat(),
            "status": str(status),
            "preview": preview,
            "transcript_lines": lines,
        }
        audit.record(session, actor, "delete", "conversation", conversation_id, before, None)
