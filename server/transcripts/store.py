"""Reading canonical transcripts: one conversation's, or every matching conversation's for an export."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations import listing
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
