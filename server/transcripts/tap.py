"""Transcript lines the relay hears, written in batches off its hot path (durable within a second)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations import lifecycle as conversations
from server.db import Database
from server.models import TranscriptEntry, utcnow
from server.transcripts.ingest import insert_entries

log = logging.getLogger("avatar_bff.transcripts")
FLUSH_INTERVAL = 0.25
MAX_QUEUE = 10_000


class TranscriptTap:
    """Collects (conversation, role, text) lines and end events; one task writes them in batches."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lines: list[dict[str, object]] = []
        self._ended: dict[str, str] = {}
        self._next_seq: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    async def _number(self, db: AsyncSession, lines: list[dict[str, object]]) -> None:
        """Give each new line the next relay seq of its conversation (seqs continue after a restart)."""
        for line in lines:
            if "seq" in line:
                continue  # numbered by an earlier flush that failed
            conversation_id = str(line["conversation_id"])
            if conversation_id not in self._next_seq:
                highest = await db.scalar(
                    select(func.max(TranscriptEntry.seq)).where(
                        TranscriptEntry.conversation_id == conversation_id, TranscriptEntry.source == "relay"
                    )
                )
                self._next_seq[conversation_id] = (highest or 0) + 1
            line["seq"] = self._next_seq[conversation_id]
            self._next_seq[conversation_id] += 1

    def line(self, conversation_id: str, role: str, text: str, when: datetime | None = None) -> None:
        """Queue a line; never waits, so the relay's packet path never stalls on the database."""
        if not text.strip():
            return
        if len(self._lines) >= MAX_QUEUE:  # the database is far behind: keep the relay alive, count the loss
            self.dropped += 1
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
            async with self._db.transaction() as db:
                if lines:
                    await self._number(db, lines)
                    await insert_entries(db, lines)
                now = utcnow()
                await conversations.end_by_id(db, ended, now)
                touched = {str(line["conversation_id"]) for line in lines} - set(ended)
                await conversations.record_activity_of(db, touched, now)
        except SQLAlchemyError as exc:
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
            await asyncio.shield(self.flush())  # stop() waits for a write in progress instead of cutting it
