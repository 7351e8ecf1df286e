"""Transcript lines seen by the relay, written in batches off the hot path (durable within a second)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.models import Session, TranscriptEntry, utcnow
from server.transcripts.ingest import end_session, insert_ignoring_duplicates

log = logging.getLogger("avatar_bff.relay")
FLUSH_INTERVAL = 0.25
MAX_QUEUE = 10_000


class TranscriptTap:
    """Collects (session, role, text) lines and session end events; one task writes them in batches."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
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
        """Give each new line the next relay seq of its session (seqs continue after a restart)."""
        for line in lines:
            if "seq" in line:
                continue  # numbered by an earlier flush that failed
            session_id = str(line["session_id"])
            if session_id not in self._next_seq:
                highest = await db.scalar(
                    select(func.max(TranscriptEntry.seq)).where(
                        TranscriptEntry.session_id == session_id, TranscriptEntry.source == "relay"
                    )
                )
                self._next_seq[session_id] = (highest or 0) + 1
            line["seq"] = self._next_seq[session_id]
            self._next_seq[session_id] += 1

    def line(self, session_id: str, role: str, text: str, when: datetime | None = None) -> None:
        """Queue a line; never waits, so the relay's packet path never stalls on the database."""
        if not text.strip():
            return
        if len(self._lines) >= MAX_QUEUE:  # the database is far behind: keep the relay alive, count the loss
            self.dropped += 1
            return
        self._lines.append(
            {
                "session_id": session_id,
                "source": "relay",
                "role": role,
                "text": text[:10_000],
                "timestamp": when or utcnow(),
            }
        )
        self._wake.set()

    def ended(self, session_id: str, reason: str) -> None:
        self._ended[session_id] = reason
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
            async with self._sessions() as db:
                if lines:
                    await self._number(db, lines)
                    await db.execute(insert_ignoring_duplicates(db.get_bind().dialect.name, lines))
                now = utcnow()
                for session_id, reason in ended.items():
                    session = await db.get(Session, session_id)
                    if session is not None:
                        end_session(session, reason, now)
                touched = {str(line["session_id"]) for line in lines}
                for session_id in touched - set(ended):
                    session = await db.get(Session, session_id)
                    if session is not None and session.status != "ended":
                        session.status, session.last_activity_at = "active", now
                await db.commit()
        except SQLAlchemyError:
            log.exception("transcript tap: could not write %d line(s); will retry", len(lines))
            self._lines = lines + self._lines
            self._ended = {**ended, **self._ended}

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL)  # gather a batch
            await asyncio.shield(self.flush())  # stop() waits for a write in progress instead of cutting it
