"""Group commit for page transcript batches: concurrent requests share one transaction.

Each request used to pay for its own transaction: half a dozen statements and a commit (an fsync on
PostgreSQL). Here the batches that arrive while a group is being written wait and go into the next one,
which reads what it needs with one query per table for the whole group, inserts every new line in one
statement and commits once. A request is answered only after the commit that holds its lines, so nothing
acknowledged can be lost, and the answers are the ones `ingest_page_batch` gives.

The group takes only the common case: a started conversation of a recording flow, not the page's final
batch. Anything else (a first batch that starts the conversation, a refusal about the token's flow, a flow
that keeps no transcript, a final batch) runs through `ingest_page_batch` in its own transaction, so those
answers are its answers by construction. If a group fails to write, each of its batches is written again
alone: one bad batch cannot fail the others'.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations import lifecycle as conversations
from server.conversations.page_token import read_page_token
from server.db import Database
from server.errors import AppError
from server.models import Conversation, ConversationStatus, Flow, TranscriptEntry, utcnow
from server.sdk_options import stored_options
from server.security.signing import Signer
from server.transcripts.ingest import (
    CLOCK_SKEW,
    IngestLimits,
    IngestRateLimiter,
    IngestResult,
    PageBatch,
    check_caps_in_memory,
    contiguous_high_water,
    entry_rows,
    ingest_page_batch,
    insert_entries,
    refuse_if_long_ended,
    text_bytes,
)

log = logging.getLogger("avatar_bff.transcripts")
MAX_GROUP_LINES = 5_000  # lines per group: bounds one statement's parameters and one transaction's size
INSERT_CHUNK = 1_000  # rows per INSERT: 7 columns each stays far below PostgreSQL's 32,767 parameters


@dataclass
class _Pending:
    batch: PageBatch
    conversation_id: str
    flow_slug: str
    answer: asyncio.Future[IngestResult]
    charged: bool = False  # the rate limiter already counted its lines (a retry alone must not again)


@dataclass
class _Known:
    """What the group read about one conversation, updated as each of its batches is applied."""

    id: str
    status: ConversationStatus
    created_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    seqs: set[int] = field(default_factory=set)
    stored_bytes: int = 0


class IngestGroup:
    """Writes page batches for one process; `submit` returns once the batch's lines are committed."""

    def __init__(
        self, db: Database, signer: Signer, limits: IngestLimits, limiter: IngestRateLimiter | None
    ) -> None:
        self._db, self._signer, self._limits, self._limiter = db, signer, limits, limiter
        self._queue: deque[_Pending] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, batch: PageBatch) -> IngestResult:
        claims = read_page_token(self._signer, batch.token)  # a bad token is refused before any waiting
        answer: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(batch, claims.conversation_id, claims.flow_slug, answer))
        if self._writer is None or self._writer.done():
            # No delay to gather a group: alone, a batch is written at once; under load, the batches that
            # arrived during one write make the next group.
            self._writer = asyncio.create_task(self._drain())
        # A client hanging up cancels only its own answer, never the writer holding others' lines.
        return await answer

    async def _drain(self) -> None:
        while self._queue:
            group: list[_Pending] = []
            lines = 0
            while self._queue and (not group or lines + len(self._queue[0].batch.entries) <= MAX_GROUP_LINES):
                item = self._queue.popleft()
                group.append(item)
                lines += len(item.batch.entries)
            try:
                alone = await self._write_group(group)
            except Exception as exc:  # any failure: write each batch on its own instead
                log.warning(
                    "transcript ingest: a group of %d batches failed (%s); writing each alone",
                    len(group),
                    type(exc).__name__,
                )
                alone = [item for item in group if not item.answer.done()]
            # Side by side, as the requests came: one that waits on the database (a retry) holds up no other.
            await asyncio.gather(*(self._write_alone(item) for item in alone))

    async def _write_alone(self, item: _Pending) -> None:
        try:
            limiter = None if item.charged else self._limiter
            result = await ingest_page_batch(self._db, self._signer, item.batch, self._limits, limiter)
        except Exception as exc:  # the request's own error, answered to it alone
            _settle(item.answer, exc)
        else:
            _settle(item.answer, result)

    async def _write_group(self, group: list[_Pending]) -> list[_Pending]:
        """Write the common-case batches of `group` in one transaction; return those to write alone."""
        results: list[tuple[_Pending, IngestResult | Exception]] = []
        alone: list[_Pending] = []
        async with self._db.transaction() as session:
            known = await self._read(session, group)
            rows: list[dict[str, object]] = []
            now = utcnow()
            for item in group:
                found = known.get((item.conversation_id, item.flow_slug))
                if found is None or item.batch.final:
                    alone.append(item)
                    continue
                try:
                    results.append((item, await self._apply(item, found, rows, now)))
                except AppError as exc:  # a refusal (cap, rate, ended) of this batch only
                    results.append((item, exc))
            for first in range(0, len(rows), INSERT_CHUNK):
                await insert_entries(session, rows[first : first + INSERT_CHUNK])
            # One UPDATE for the whole group, not one per conversation (a retry with no new line counts too).
            applied = {item.conversation_id for item, outcome in results if isinstance(outcome, IngestResult)}
            await conversations.record_activity_of(session, applied, now)
        # Committed: only now may the pages hear that their lines are stored.
        for item, outcome in results:
            _settle(item.answer, outcome)
        return alone

    async def _read(self, session: AsyncSession, group: list[_Pending]) -> dict[tuple[str, str], _Known]:
        """The group's conversations that take the common path, keyed by (conversation id, flow slug)."""
        ids = list({item.conversation_id for item in group})
        c, e = Conversation, TranscriptEntry
        # One round trip: each conversation with its flow and its page lines' count, highest seq and bytes.
        # Counts, not rows: a page numbers its lines 1, 2, 3 …, so when a conversation holds as many lines as
        # its highest seq, it holds exactly 1..highest, and its seqs need not be read one by one.
        totals = (
            select(
                e.conversation_id,
                func.count().label("lines"),
                func.max(e.seq).label("highest"),
                func.sum(text_bytes(session)).label("bytes"),
            )
            .where(e.conversation_id.in_(ids), e.source == "page")
            .group_by(e.conversation_id)
            .subquery()
        )
        found = await session.execute(
            select(
                c.id,
                c.status,
                c.created_at,
                c.ended_at,
                c.end_reason,
                Flow.slug,
                Flow.sdk_options,
                totals.c.lines,
                totals.c.highest,
                totals.c.bytes,
            )
            .join(Flow, Flow.id == c.flow_id)
            .outerjoin(totals, totals.c.conversation_id == c.id)
            .where(c.id.in_(ids))
        )
        known: dict[tuple[str, str], _Known] = {}
        gaps: dict[str, _Known] = {}
        for cid, status, created, ended, reason, slug, options, count, highest, size in found:
            if not stored_options(options).record_transcript:
                continue  # written alone: `ingest_page_batch` answers for a flow that keeps no transcript
            entry = known[(cid, slug)] = _Known(
                cid, status, created, ended, reason, stored_bytes=int(size or 0)
            )
            if count == highest:
                entry.seqs = set(range(1, (highest or 0) + 1))
            else:
                gaps[cid] = entry
        if gaps:  # lines missing in between (a page that skipped some): read which seqs are stored
            stored = await session.execute(
                select(e.conversation_id, e.seq).where(e.conversation_id.in_(list(gaps)), e.source == "page")
            )
            for cid, seq in stored:
                gaps[cid].seqs.add(seq)
        return known

    async def _apply(
        self, item: _Pending, known: _Known, rows: list[dict[str, object]], now: datetime
    ) -> IngestResult:
        """`ingest_page_batch`'s checks and rows for one batch, against what the group holds so far."""
        conversation = known
        new = [entry for entry in item.batch.entries if entry.seq not in known.seqs]
        if new:
            refuse_if_long_ended(conversation.status, conversation.ended_at, now)
        size = check_caps_in_memory(len(known.seqs), known.stored_bytes, new, self._limits)
        if self._limiter is not None and new:
            await self._limiter.charge(conversation.id, len(new))
            item.charged = True
        earliest = conversation.created_at - CLOCK_SKEW
        latest = (conversation.ended_at or now) + CLOCK_SKEW
        rows.extend(
            entry_rows(
                conversation.id,
                "page",
                [
                    {
                        **e.model_dump(include={"seq", "role", "text", "pronunciation_score"}),
                        "timestamp": min(max(e.timestamp, earliest), latest),
                    }
                    for e in new
                ],
            )
        )
        known.seqs.update(e.seq for e in new)
        known.stored_bytes += size
        return IngestResult(
            len(new),
            contiguous_high_water(known.seqs),
            conversation.status,
            end_reason=conversation.end_reason,
        )


def _settle(answer: asyncio.Future[IngestResult], outcome: IngestResult | BaseException) -> None:
    if answer.done():  # cancelled: nobody waits for it any more (its lines are stored all the same)
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
