"""A conversation's diagnostics timeline: what an operator reads when a visitor says "it didn't connect".

The relay and the pages record events as they happen (connects with their latency, refusals with their
reason, WHEP answers, SDK errors the page reported, the end). Events hold short codes and numbers only,
never transcript text, tokens or visitor values. A conversation keeps at most `MAX_EVENTS`; the last slot is
kept for its end. The relay's hot path never waits on the database: `TimelineRecorder` queues and writes in
batches, as the transcript tap does for lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations import lifecycle
from server.db import Database, is_transient
from server.models import Conversation, ConversationEvent, ConversationStatus, Flow, utcnow
from server.security.signing import Signer

log = logging.getLogger("avatar_bff.timeline")

# What the timeline records (kind: meaning).
KINDS = {
    "relay_connect": "the browser's socket reached the relay",
    "page_admitted": "an Iframe-mode page was let load its meeting (budgets and kill switches checked)",
    "reconnect": "a later browser socket for the same conversation",
    "upstream_connect": "the relay reached the avatar service (latency_ms)",
    "refused": "a connect was turned away (reason)",
    "whep": "the avatar video offer was answered (status, latency_ms)",
    "whep_failed": "the avatar video offer failed: refused here or by the service (status, error)",
    "sdk_error": "the page's SDK reported an error (code, message)",
    "page_end": "the page said how its visitor ended the call (reason)",
    "end": "the conversation ended (reason)",
    "handed_off": "this server stopped; the browser was told to reconnect (to another instance)",
}
PAGE_KINDS = ("sdk_error", "end")  # what a page may report itself
PROBLEM_KINDS = (
    "refused",
    "whep_failed",
    "sdk_error",
)  # what the overview lists as the latest refusals and errors

# How conversations end: the end_reason values the services store, and the category each one counts as.
END_CATEGORIES = {
    "end_phrase": "Spoken end phrase",
    "visitor_ended": "Visitor ended",
    "time_limit": "Time limit",
    "abandoned": "Abandoned (idle)",
    "refused": "Refused",
    "stopped": "Stopped (budget or operator)",
}
END_REASONS = {
    "end_phrase": "end_phrase",  # the page heard one of the flow's end phrases
    "conversation_ended": "end_phrase",  # the avatar service ended the conversation (its own end phrase)
    "visitor_ended": "visitor_ended",  # the visitor pressed End
    "page_closed": "visitor_ended",  # the page's final transcript flush (closed, navigated away)
    "time_expired": "time_limit",  # the service's conversation time limit
    "idle_timeout": "abandoned",  # no activity for AVATAR_BFF_SESSION_IDLE_SECONDS
    "budget_duration": "time_limit",  # the flow's longest conversation
    "budget_idle": "abandoned",  # the flow's idle cut: the visitor did nothing for that long
    "budget_minutes": "stopped",  # the flow's conversation minutes of the day are used up
    "kill_switch": "stopped",  # the flow's or the global kill switch
    "ended_by_operator": "stopped",  # an operator ended it (console or API)
}
# A conversation that never reached the avatar service and had a connect refused counts as "refused",
# whatever ended it later (it idles out).
PAGE_END_REASONS = ("end_phrase", "visitor_ended")  # what a page's `end` report may say

MAX_EVENTS = 200
MAX_DETAIL_BYTES = 1024
MAX_TEXT = 200  # characters of one detail string
MAX_QUEUE = 10_000
FLUSH_INTERVAL = 0.25
# Refusals before a conversation started are counted, and written per flow and reason at most this often: a
# flood of refused sockets makes a few rows a minute, not one each.
UNSTARTED_INTERVAL = 10.0
UNSTARTED_KEPT = timedelta(days=31)


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    detail: dict[str, Any]


def clean_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """Short strings, numbers and booleans only, at most `MAX_DETAIL_BYTES` of JSON in all."""
    cleaned: dict[str, Any] = {}
    for key, value in detail.items():
        if isinstance(value, str):
            value = value.replace("\x00", "")[:MAX_TEXT]
        elif value is not None and not isinstance(value, bool | int | float):
            continue
        cleaned[str(key)[:40]] = value
        if len(json.dumps(cleaned, ensure_ascii=False).encode()) > MAX_DETAIL_BYTES:
            del cleaned[str(key)[:40]]
            break
    return cleaned


async def record(
    session: AsyncSession, conversation_id: str, kind: str, detail: dict[str, Any], at: datetime | None = None
) -> bool:
    """Add one event in the caller's transaction; False when the conversation's timeline is full."""
    return bool(await _insert(session, [(conversation_id, kind, detail, at or utcnow())]))


async def _insert(
    session: AsyncSession,
    events: list[tuple[str, str, dict[str, Any], datetime]],
    unstarted: list[tuple[str, str, dict[str, Any]]] | None = None,
) -> int:
    """Store what fits (conversations that exist, under their cap); a second relay_connect is a reconnect.

    Events of conversations that do not exist (never started, or erased) go to `unstarted` when given."""
    ids = {event[0] for event in events}
    stored = dict(
        (
            await session.execute(
                select(ConversationEvent.conversation_id, func.count())
                .where(ConversationEvent.conversation_id.in_(ids))
                .group_by(ConversationEvent.conversation_id)
            )
        ).all()
    )
    connected = set(
        (
            await session.execute(
                select(ConversationEvent.conversation_id)
                .where(
                    ConversationEvent.conversation_id.in_(ids),
                    ConversationEvent.kind.in_(("relay_connect", "reconnect")),
                )
                .distinct()
            )
        ).scalars()
    )
    existing = set((await session.execute(select(Conversation.id).where(Conversation.id.in_(ids)))).scalars())
    written = 0
    for conversation_id, kind, detail, at in events:
        if conversation_id not in existing:
            if unstarted is not None:  # never started (a capacity refusal) or erased meanwhile
                unstarted.append((conversation_id, kind, detail))
            continue
        count = stored.get(conversation_id, 0)
        if count >= MAX_EVENTS or (count == MAX_EVENTS - 1 and kind != "end"):
            continue
        if kind == "relay_connect":
            if conversation_id in connected:
                kind = "reconnect"
            connected.add(conversation_id)
        session.add(ConversationEvent(conversation_id=conversation_id, at=at, kind=kind, detail=detail))
        stored[conversation_id] = count + 1
        written += 1
    return written


async def events_of(db: Database, conversation_id: str) -> list[Event]:
    async with db.reading() as session:
        rows = (
            await session.execute(
                select(ConversationEvent.at, ConversationEvent.kind, ConversationEvent.detail)
                .where(ConversationEvent.conversation_id == conversation_id)
                .order_by(ConversationEvent.at, ConversationEvent.id)
            )
        ).all()
    return [Event(at, kind, detail or {}) for at, kind, detail in rows]


@dataclass(frozen=True)
class Problem:
    at: datetime
    conversation_id: str | None  # None: turned away before any conversation started (`count` of them)
    flow_slug: str
    kind: str
    detail: dict[str, Any]


async def latest_problems(db: Database, limit: int = 20) -> list[Problem]:
    """The latest refusals and errors across flows, newest first; preview conversations left out."""
    async with db.reading() as session:
        rows = (
            await session.execute(
                select(
                    ConversationEvent.at,
                    ConversationEvent.conversation_id,
                    Flow.slug,
                    ConversationEvent.kind,
                    ConversationEvent.detail,
                )
                .outerjoin(Conversation, Conversation.id == ConversationEvent.conversation_id)
                .join(Flow, Flow.id == func.coalesce(ConversationEvent.flow_id, Conversation.flow_id))
                .where(
                    ConversationEvent.kind.in_(PROBLEM_KINDS),
                    or_(ConversationEvent.conversation_id.is_(None), Conversation.preview.is_(False)),
                )
                .order_by(ConversationEvent.at.desc(), ConversationEvent.id.desc())
                .limit(limit)
            )
        ).all()
    return [Problem(at, cid, slug, kind, detail or {}) for at, cid, slug, kind, detail in rows]


async def _insert_unstarted(session: AsyncSession, counts: Counter[tuple[str, str]]) -> None:
    """One `refused` event per flow and reason, with how many, on the flow (there is no conversation)."""
    slugs = {slug for slug, _ in counts}
    flow_ids = dict((await session.execute(select(Flow.slug, Flow.id).where(Flow.slug.in_(slugs)))).all())
    for (slug, reason), count in counts.items():
        if slug in flow_ids:
            session.add(
                ConversationEvent(
                    conversation_id=None,
                    flow_id=flow_ids[slug],
                    kind="refused",
                    detail={"reason": reason, "count": count},
                )
            )


async def forget_unstarted(db: Database, before: datetime) -> int:
    """Housekeeping: flow-level refusals older than `before` (conversations' events go with them)."""
    async with db.transaction() as session:
        result = await session.execute(
            delete(ConversationEvent).where(
                ConversationEvent.conversation_id.is_(None), ConversationEvent.at < before
            )
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def page_report(db: Database, signer: Signer, token: str, kind: str, code: str, message: str) -> None:
    """What a page reported: an SDK error, or how its visitor ended the conversation.

    An SDK error starts the conversation if nothing did yet (a connect that failed is what an operator
    looks for). An `end` report ends nothing (the page's final transcript flush does, as `page_closed`, and
    the SDK's media teardown must still find the conversation active): it is kept as a `page_end` event, and
    whichever of the two arrives second makes the report's reason the conversation's end reason."""
    async with db.transaction() as session:
        page = await lifecycle.resolve_page_token(
            session, signer, token, start=kind == "sdk_error", late_lines=True
        )
        conversation = page.conversation
        if conversation is None:
            return
        if kind == "sdk_error":
            await record(session, conversation.id, kind, clean_detail({"code": code, "message": message}))
            return
        await record(session, conversation.id, "page_end", {"reason": code})
        await session.flush()  # SQLite: the write lock is ours from here, so the row read next is current
        # PostgreSQL: a final flush ending it meanwhile has committed before this lock is granted.
        await session.refresh(conversation, with_for_update=True)
        if conversation.status == ConversationStatus.ENDED and conversation.end_reason == "page_closed":
            conversation.end_reason = code  # the same end, said more precisely


async def page_end_reason(session: AsyncSession, conversation_id: str) -> str | None:
    """Why the page's final flush ends a conversation: what the page reported, else `page_closed`; None
    when it has ended meanwhile.

    The row is locked first, so an end report committing meanwhile is either seen here or sees the end."""
    status = await session.scalar(
        select(Conversation.status).where(Conversation.id == conversation_id).with_for_update()
    )
    if status != ConversationStatus.ACTIVE:
        return None
    reported = await session.scalar(
        select(ConversationEvent.detail)
        .where(ConversationEvent.conversation_id == conversation_id, ConversationEvent.kind == "page_end")
        .order_by(ConversationEvent.id.desc())
        .limit(1)
    )
    reason = reported.get("reason") if isinstance(reported, dict) else None
    return reason if reason in PAGE_END_REASONS else "page_closed"


class TimelineRecorder:
    """Queues events and writes them in batches from one task; `note` never waits."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[tuple[str, str, dict[str, Any], datetime]] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped: Counter[str] = Counter()  # queue_full, rejected
        self._flows: dict[str, str] = {}  # conversation id -> flow slug, for refusals still queued
        self._unstarted: Counter[tuple[str, str]] = Counter()  # (flow slug, reason) -> refusals to write
        self._unstarted_written = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush(final=True)

    def note(self, conversation_id: str, kind: str, **detail: Any) -> None:
        if len(self._queue) >= MAX_QUEUE:  # the database is far behind: the relay comes first
            self.dropped["queue_full"] += 1
            return
        self._queue.append((conversation_id, kind, clean_detail(detail), utcnow()))
        self._wake.set()

    def refused(self, conversation_id: str, flow_slug: str, reason: str) -> None:
        """A connect turned away: on its conversation's timeline, or counted on the flow if none started."""
        if len(self._flows) < MAX_QUEUE:
            self._flows[conversation_id] = flow_slug
        self.note(conversation_id, "refused", reason=reason)

    async def flush(self, final: bool = False) -> None:
        async with self._flushing:
            events, self._queue = self._queue, []
            if not events and not (final and self._unstarted) and not self._unstarted_due():
                return
            unstarted: list[tuple[str, str, dict[str, Any]]] = []
            try:
                async with self._db.transaction() as session:
                    await _insert(session, events, unstarted)
                    for conversation_id, kind, detail in unstarted:
                        slug = self._flows.get(conversation_id)
                        if kind == "refused" and slug is not None:
                            self._unstarted[(slug, str(detail.get("reason", "refused")))] += 1
                    for conversation_id, *_ in events:
                        self._flows.pop(conversation_id, None)
                    if self._unstarted and (final or self._unstarted_due()):
                        await _insert_unstarted(session, self._unstarted)
                        self._unstarted.clear()
                        self._unstarted_written = time.monotonic()
            except Exception as exc:
                if is_transient(exc):  # the database is away or restarting
                    log.error(
                        "timeline: could not write %d event(s) (%s); will retry",
                        len(events),
                        type(exc).__name__,
                    )
                    self._queue = (events + self._queue)[:MAX_QUEUE]
                elif isinstance(
                    exc, SQLAlchemyError
                ):  # a conversation erased between the check and the write
                    self.dropped["rejected"] += len(events)
                    log.warning("timeline: dropped %d event(s) (%s)", len(events), type(exc).__name__)
                else:
                    raise

    def _unstarted_due(self) -> bool:
        return bool(self._unstarted) and time.monotonic() - self._unstarted_written >= UNSTARTED_INTERVAL

    async def _run(self) -> None:
        while True:
            # Counted refusals are written within UNSTARTED_INTERVAL even when nothing else happens.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), UNSTARTED_INTERVAL if self._unstarted else None)
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await asyncio.shield(self.flush())
            except Exception as exc:  # an unforeseen error loses this batch, never the writer itself
                log.error("timeline: a write failed (%s); writing on", type(exc).__name__)
