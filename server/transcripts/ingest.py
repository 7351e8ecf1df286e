"""Store transcript batches posted by hosted pages: idempotent, all-or-nothing, bounded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from server.errors import ServiceError
from server.models import Instant, Session, TranscriptEntry, utcnow
from server.security.signing import PAGE_SESSION, Signer, TokenError

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
    status: str


def contiguous_high_water(seqs: set[int]) -> int:
    highest = 0
    while highest + 1 in seqs:
        highest += 1
    return highest


def insert_ignoring_duplicates(dialect: str, rows: list[dict[str, object]]) -> Executable:
    """INSERT … ON CONFLICT DO NOTHING on (session, source, seq): the database enforces idempotency."""
    keys = ["session_id", "source", "seq"]
    if dialect == "postgresql":
        return postgresql_insert(TranscriptEntry).values(rows).on_conflict_do_nothing(index_elements=keys)
    return sqlite_insert(TranscriptEntry).values(rows).on_conflict_do_nothing(index_elements=keys)


async def session_from_token(db: AsyncSession, signer: Signer, token: str) -> Session:
    try:
        claims = signer.verify(PAGE_SESSION, token)
    except TokenError as exc:
        raise ServiceError(401, f"token_{exc.code}", f"session token refused: {exc}") from None
    session = await db.get(Session, str(claims.get("sid", "")))
    if session is None:
        raise ServiceError(404, "unknown_session", "no session matches this token")
    return session


async def ingest_page_batch(db: AsyncSession, signer: Signer, batch: PageBatch) -> IngestResult:
    """Store a page's batch in one transaction; a retried batch stores nothing twice."""
    session = await session_from_token(db, signer, batch.token)
    existing = set(
        (
            await db.execute(
                select(TranscriptEntry.seq).where(
                    TranscriptEntry.session_id == session.id, TranscriptEntry.source == "page"
                )
            )
        ).scalars()
    )
    new = [entry for entry in batch.entries if entry.seq not in existing]
    if session.status == "ended" and new:
        raise ServiceError(409, "session_ended", "this conversation has ended; no new lines can be added")
    if new:
        rows: list[dict[str, object]] = [
            {
                "session_id": session.id,
                "source": "page",
                "seq": e.seq,
                "role": e.role,
                "text": e.text,
                "timestamp": e.timestamp,
                "pronunciation_score": e.pronunciation_score,
            }
            for e in new
        ]
        await db.execute(insert_ignoring_duplicates(db.get_bind().dialect.name, rows))
    now = utcnow()
    if session.status != "ended":
        session.last_activity_at = now
        session.status = "active" if session.status == "created" else session.status
        if batch.final:
            end_session(session, "page_closed", now)
    await db.commit()
    return IngestResult(len(new), contiguous_high_water(existing | {e.seq for e in new}), session.status)


def end_session(session: Session, reason: str, when: datetime) -> None:
    if session.status != "ended":
        session.status = "ended"
        session.end_reason = reason
        session.ended_at = when
