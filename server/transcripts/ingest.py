"""Store transcript batches posted by hosted pages: idempotent, all-or-nothing, bounded."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, Integer, LargeBinary, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations import lifecycle as conversations
from server.conversations import timeline
from server.db import Database, DatabaseUnavailable, insert_many_ignoring_conflicts, retry_transient
from server.errors import Conflict, TooLarge, TooManyRequests, Unavailable
from server.models import ConversationStatus, Instant, TranscriptEntry, utcnow
from server.sdk_options import stored_options
from server.security.signing import Signer
from server.shared_state import SharedState

# How far a page's clock may be off ours: its timestamps are clamped to the conversation's life, plus this.
CLOCK_SKEW = timedelta(minutes=2)
# An ended conversation still takes a page's new lines this long after its end: when the relay, an operator,
# a budget or the idle sweep ends it, the page still holds its last lines, and its final flush follows.
LATE_LINES = CLOCK_SKEW
NOT_STARTED = "not_started"  # the status answered while a page's conversation has not started
MAX_ENTRIES_PER_BATCH = 500
MAX_TEXT_CHARS = 10_000


class PageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(
        ge=1, le=1_000_000, description="per-session sequence number, from 1, chosen by the page"
    )
    role: Literal["Avatar", "User"]
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    timestamp: Instant
    pronunciation_score: int | None = Field(
        default=None, ge=0, le=100, description="0-100, User lines only (Iframe SDK `pronunciation-score`)"
    )

    @model_validator(mode="after")
    def _score_on_user_lines(self) -> PageEntry:
        if self.pronunciation_score is not None and self.role != "User":
            raise ValueError("pronunciation_score is only allowed on User lines")
        return self

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        if "\x00" in value:  # no person types it, and PostgreSQL cannot store it in text
            raise ValueError("text contains a NUL character (\\u0000)")
        return value


class PageBatch(BaseModel):
    """What a hosted page posts; the token rides in the body because sendBeacon cannot set headers."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=4096)
    entries: list[PageEntry] = Field(default_factory=list, max_length=MAX_ENTRIES_PER_BATCH)
    final: bool = Field(default=False, description="the page is closing or the conversation ended")

    @model_validator(mode="after")
    def _unique_seqs(self) -> PageBatch:
        seqs = [entry.seq for entry in self.entries]
        if len(seqs) != len(set(seqs)):
            raise ValueError("a seq appears twice in the batch")
        return self


@dataclass(frozen=True)
class IngestResult:
    stored: int  # new entries written by this batch
    highest_seq: int  # every seq from 1 to this one is stored: the page resends only what follows
    status: str  # the conversation's status, or NOT_STARTED
    recorded: bool = True  # False: the flow keeps no transcript, and this batch's lines were discarded
    end_reason: str | None = None  # why the conversation ended, once it has


@dataclass(frozen=True)
class IngestLimits:
    """What one conversation may store from one source (settings `transcript_max_lines` and `_bytes`)."""

    max_lines: int
    max_bytes: int  # UTF-8 bytes of text


class IngestRateLimiter:
    """Lines per conversation: `rate` a second, up to `burst` saved up, in buckets the instances share.

    A batch costs its new lines: a retry of lines already stored (a page resending after a lost answer)
    costs nothing.
    """

    def __init__(self, shared: SharedState, rate: float, burst: int) -> None:
        self.shared, self.rate, self.burst = shared, rate, float(burst)

    async def charge(self, conversation_id: str, cost: int) -> None:
        wait = await self.shared.take(
            f"ingest-lines:{conversation_id}", rate=self.rate, burst=self.burst, cost=cost
        )
        if wait:
            raise TooManyRequests(
                "ingest_rate_limited",
                f"too many transcript lines for this session (at most {self.rate:g} a second, "
                f"{self.burst:g} at once); retry in {math.ceil(wait)} s",
            )


def contiguous_high_water(seqs: set[int]) -> int:
    highest = 0
    while highest + 1 in seqs:
        highest += 1
    return highest


def entry_rows(
    conversation_id: str, source: str, entries: list[dict[str, object]]
) -> list[dict[str, object]]:
    return [{**entry, "conversation_id": conversation_id, "source": source} for entry in entries]


async def insert_entries(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    """Insert transcript rows; a (conversation, source, seq) already stored is skipped by the database."""
    if rows:
        keys = ["conversation_id", "source", "seq"]
        dialect = session.get_bind().dialect.name
        await session.execute(insert_many_ignoring_conflicts(dialect, TranscriptEntry, keys), rows)


def refuse_if_long_ended(status: ConversationStatus, ended_at: datetime | None, now: datetime) -> None:
    """New lines for a conversation that ended more than `LATE_LINES` ago are refused."""
    if status == ConversationStatus.ENDED and (ended_at is None or now - ended_at > LATE_LINES):
        minutes = int(LATE_LINES.total_seconds() // 60)
        raise Conflict(
            "session_ended",
            f"this conversation ended more than {minutes} minutes ago; no new lines can be added",
        )


def _clamp(when: datetime, earliest: datetime, latest: datetime) -> datetime:
    """A page's timestamp within the conversation's life: a line from 1970 cannot jump to the top."""
    return min(max(when, earliest), latest)


def text_bytes(session: AsyncSession) -> ColumnElement[int]:
    """The SQL for a line's size in UTF-8 bytes on this backend."""
    if session.get_bind().dialect.name == "postgresql":
        return func.octet_length(TranscriptEntry.text, type_=Integer)
    return func.length(
        cast(TranscriptEntry.text, LargeBinary), type_=Integer
    )  # SQLite: a BLOB's length is in bytes


def check_caps_in_memory(
    stored_lines: int, stored_bytes: int, new: list[PageEntry], limits: IngestLimits
) -> int:
    """Refuse a batch that would take a conversation's page transcript over a cap; return its new bytes."""
    _check_line_cap(stored_lines, new, limits)
    size = sum(len(entry.text.encode()) for entry in new)
    _check_byte_cap(stored_bytes, size, limits)
    return size


def _check_line_cap(stored: int, new: list[PageEntry], limits: IngestLimits) -> None:
    if stored + len(new) > limits.max_lines:
        raise TooLarge(
            "transcript_too_long",
            f"this session's transcript would exceed {limits.max_lines} lines from the page "
            f"(the cap, AVATAR_BFF_TRANSCRIPT_MAX_LINES); {stored} are stored",
        )


def _check_byte_cap(stored_bytes: int, size: int, limits: IngestLimits) -> None:
    if size and stored_bytes + size > limits.max_bytes:
        raise TooLarge(
            "transcript_too_large",
            f"this session's transcript would exceed {limits.max_bytes} bytes of text from the page "
            "(the cap, AVATAR_BFF_TRANSCRIPT_MAX_BYTES)",
        )


async def _check_caps(
    session: AsyncSession, conversation_id: str, stored: int, new: list[PageEntry], limits: IngestLimits
) -> None:
    """Refuse the whole batch when it would take the conversation's page transcript over a cap."""
    _check_line_cap(stored, new, limits)
    size = sum(len(entry.text.encode()) for entry in new)
    if size:
        stored_bytes = await session.scalar(
            select(func.coalesce(func.sum(text_bytes(session)), 0)).where(
                TranscriptEntry.conversation_id == conversation_id, TranscriptEntry.source == "page"
            )
        )
        _check_byte_cap(int(stored_bytes or 0), size, limits)


async def ingest_page_batch(
    db: Database,
    signer: Signer,
    batch: PageBatch,
    limits: IngestLimits,
    limiter: IngestRateLimiter | None = None,
) -> IngestResult:
    """Store a page's batch in one transaction (starting the conversation on its first line); a retried batch
    stores nothing twice, a refused one (over a cap or the rate) nothing at all.

    While the database cannot be reached (a restart) the transaction is tried again for a few seconds, then
    refused with 503: the page keeps its lines and resends them, so nothing it was told is stored is lost.
    """
    try:
        return await retry_transient(lambda: _ingest(db, signer, batch, limits, limiter))
    except DatabaseUnavailable:
        raise Unavailable(
            "database_unavailable",
            "transcript storage is unavailable right now; send the lines again shortly",
        ) from None


async def _ingest(
    db: Database,
    signer: Signer,
    batch: PageBatch,
    limits: IngestLimits,
    limiter: IngestRateLimiter | None,
) -> IngestResult:
    async with db.transaction() as session:
        # An empty batch (the beacon of a page left without a word) starts nothing.
        page = await conversations.resolve_page_token(
            session, signer, batch.token, start=bool(batch.entries), late_lines=True
        )
        conversation = page.conversation
        recording = stored_options(page.flow.sdk_options).record_transcript
        if conversation is None:
            return IngestResult(0, 0, NOT_STARTED, recording)
        if not recording:  # privacy: the flow keeps no transcript; the call's start and end still count
            now = utcnow()
            conversations.record_activity(conversation, now)
            if batch.final:
                conversations.end(conversation, "page_closed", now)
            highest = max((entry.seq for entry in batch.entries), default=0)
            return IngestResult(0, highest, conversation.status, False, conversation.end_reason)
        existing = set(
            (
                await session.execute(
                    select(TranscriptEntry.seq).where(
                        TranscriptEntry.conversation_id == conversation.id, TranscriptEntry.source == "page"
                    )
                )
            ).scalars()
        )
        new = [entry for entry in batch.entries if entry.seq not in existing]
        now = utcnow()
        if new:
            refuse_if_long_ended(conversation.status, conversation.ended_at, now)
        await _check_caps(session, conversation.id, len(existing), new, limits)
        if limiter is not None and new:
            await limiter.charge(conversation.id, len(new))
        earliest = conversation.created_at - CLOCK_SKEW
        latest = (conversation.ended_at or now) + CLOCK_SKEW
        await insert_entries(
            session,
            entry_rows(
                conversation.id,
                "page",
                [
                    {
                        **e.model_dump(include={"seq", "role", "text", "pronunciation_score"}),
                        "timestamp": _clamp(e.timestamp, earliest, latest),
                    }
                    for e in new
                ],
            ),
        )
        conversations.record_activity(conversation, now)
        reason = None
        if batch.final and conversation.status == ConversationStatus.ACTIVE:
            reason = await timeline.page_end_reason(session, conversation.id)
        if reason is not None:
            conversations.end(conversation, reason, now)
            await timeline.record(session, conversation.id, "end", {"reason": reason, "by": "page"}, now)
        status, end_reason = conversation.status, conversation.end_reason
    return IngestResult(
        len(new), contiguous_high_water(existing | {e.seq for e in new}), status, end_reason=end_reason
    )
