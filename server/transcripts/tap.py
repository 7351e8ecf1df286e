"""Transcript lines the relay hears, written in batches off its hot path (durable within a second)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations import lifecycle as conversations
from server.db import Database, is_transient
from server.models import Conversation, Flow, TranscriptEntry, utcnow
from server.sdk_options import stored_options
from server.transcripts.ingest import insert_entries, text_bytes

log = logging.getLogger("avatar_bff.transcripts")
FLUSH_INTERVAL = 0.25
MAX_QUEUE = 10_000


class TranscriptTap:
    """Collects (conversation, role, text) lines and end events; one task writes them in batches."""

    def __init__(self, db: Database, max_lines: int = 5000, max_bytes: int = 2 * 1024 * 1024) -> None:
        self._db = db
        self._max_lines, self._max_bytes = max_lines, max_bytes  # per conversation, as for the page
        self._stored_bytes: dict[str, int] = {}
        self._lines: list[dict[str, object]] = []
        self._ended: dict[str, str] = {}
        self._next_seq: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Lines not stored, by reason: queue_full, over_cap, conversation_gone (erased meanwhile),
        # rejected (by the database), not_recorded (the flow keeps no transcript)
        self.dropped: Counter[str] = Counter()
        self.stored = 0  # lines committed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    async def _number(self, db: AsyncSession, lines: list[dict[str, object]]) -> None:
        """Give each new line the next relay seq of its conversation (seqs continue after a restart); drop
        (from `lines` itself, so a retry does not count them twice) those that would go over a cap."""
        kept = []
        for line in lines:
            if "seq" in line:
                kept.append(line)  # numbered by an earlier flush that failed
                continue
            conversation_id = str(line["conversation_id"])
            if conversation_id not in self._next_seq:
                highest, size = (
                    await db.execute(
                        select(func.max(TranscriptEntry.seq), func.sum(text_bytes(db))).where(
                            TranscriptEntry.conversation_id == conversation_id,
                            TranscriptEntry.source == "relay",
                        )
                    )
                ).one()
                self._next_seq[conversation_id] = (highest or 0) + 1
                self._stored_bytes[conversation_id] = size or 0
            size = len(str(line["text"]).encode())
            if (
                self._next_seq[conversation_id] > self._max_lines
                or self._stored_bytes[conversation_id] + size > self._max_bytes
            ):
                self.dropped["over_cap"] += 1
                continue
            line["seq"] = self._next_seq[conversation_id]
            self._next_seq[conversation_id] += 1
            self._stored_bytes[conversation_id] += size
            kept.append(line)
        lines[:] = kept

    def line(self, conversation_id: str, role: str, text: str, when: datetime | None = None) -> None:
        """Queue a line; never waits, so the relay's packet path never stalls on the database."""
        text = text.replace("\x00", "")  # PostgreSQL refuses NUL in text; the rest of the line is kept
        if not text.strip():
            return
        if len(self._lines) >= MAX_QUEUE:  # the database is far behind: keep the relay alive, count the loss
            self.dropped["queue_full"] += 1
            return
        self._lines.append(
            {
                "conversation_id": conversation_id,
                "source": "relay",
                "role": role,
                "text": text[:10_000],
                "timestamp": when or utcnow(),
            }
        )
        self._wake.set()

    def ended(self, conversation_id: str, reason: str) -> None:
        self._ended[conversation_id] = reason
        self._wake.set()

    async def flush(self) -> None:
        async with self._flushing:  # one writer at a time: seqs are numbered once, in order
            await self._write()

    async def _write(self) -> None:
        lines, self._lines = self._lines, []
        ended, self._ended = self._ended, {}
        if not lines and not ended:
            return
        try:
            await self._store(lines, ended)
        except Exception as exc:
            if is_transient(exc):  # the database is away or restarting: all of it again later
                self._retry_later(lines, ended, exc)
            elif isinstance(exc, SQLAlchemyError):
                # One bad row (or a conversation erased meanwhile) must not hold back everyone else's lines.
                await self._store_one_by_one(lines, ended)
            else:
                raise

    async def _not_recorded(self, db: AsyncSession, lines: list[dict[str, object]]) -> set[str]:
        """Conversations among `lines` whose flow keeps no transcript (privacy): their lines are dropped."""
        ids = {str(line["conversation_id"]) for line in lines}
        if not ids:
            return set()
        rows = await db.execute(
            select(Conversation.id, Flow.sdk_options)
            .join(Flow, Flow.id == Conversation.flow_id)
            .where(Conversation.id.in_(ids))
        )
        return {row.id for row in rows if not stored_options(row.sdk_options).record_transcript}

    async def _store(self, lines: list[dict[str, object]], ended: dict[str, str]) -> None:
        async with self._db.transaction() as db:
            private = await self._not_recorded(db, lines)
            if private:
                kept = [line for line in lines if str(line["conversation_id"]) not in private]
                self.dropped["not_recorded"] += len(lines) - len(kept)
                lines[:] = kept
            if lines:
                await self._number(db, lines)
                await insert_entries(db, lines)
            now = utcnow()
            await conversations.end_by_id(db, ended, now)
            touched = {str(line["conversation_id"]) for line in lines} - set(ended)
            await conversations.record_activity_of(db, touched, now)
        self.stored += len(lines)

    async def _store_one_by_one(self, lines: list[dict[str, object]], ended: dict[str, str]) -> None:
        """Each conversation in its own transaction, then each line of a failing one: drop only what fails."""
        by_conversation: dict[str, list[dict[str, object]]] = {key: [] for key in ended}
        for line in lines:
            by_conversation.setdefault(str(line["conversation_id"]), []).append(line)
        pending = list(by_conversation.items())
        for index, (conversation_id, its_lines) in enumerate(pending):
            try:
                await self._store_conversation(conversation_id, its_lines, ended.get(conversation_id))
            except Exception as exc:  # even a lone line or a read fails: the database is the problem
                if not isinstance(exc, SQLAlchemyError) and not is_transient(exc):
                    raise
                rest = pending[index:]
                self._retry_later(
                    [line for _, group in rest for line in group],
                    {key: ended[key] for key, _ in rest if key in ended},
                    exc,
                )
                return

    async def _store_conversation(
        self, conversation_id: str, lines: list[dict[str, object]], end_reason: str | None
    ) -> None:
        its_ended = {conversation_id: end_reason} if end_reason is not None else {}
        async with self._db.reading() as db:
            if await db.get(Conversation, conversation_id) is None:
                self.dropped["conversation_gone"] += len(lines)
                return
        try:
            await self._store(lines, its_ended)
            return
        except SQLAlchemyError as exc:
            if is_transient(exc):
                raise
        for line in lines:
            try:
                await self._store([line], {})
            except SQLAlchemyError as exc:
                if is_transient(exc):
                    raise
                self.dropped["rejected"] += 1
                log.error("transcript tap: dropped a line the database refused (%s)", type(exc).__name__)
        await self._store([], its_ended)

    def _retry_later(self, lines: list[dict[str, object]], ended: dict[str, str], exc: Exception) -> None:
        # The error's text can hold the statement's parameters (transcript text): log its kind only.
        log.error(
            "transcript tap: could not write %d line(s) (%s); will retry", len(lines), type(exc).__name__
        )
        self._lines = lines + self._lines
        self._ended = {**ended, **self._ended}

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL)  # gather a batch
            try:
                await asyncio.shield(
                    self.flush()
                )  # stop() waits for a write in progress instead of cutting it
            except Exception as exc:  # an unforeseen error loses this batch, never the writer itself
                log.error("transcript tap: a write failed (%s); writing on", type(exc).__name__)
