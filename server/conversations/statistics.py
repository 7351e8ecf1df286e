"""Is each avatar used, and is it working: conversations and conversation-minutes per flow and day, and how
conversations ended. Grouped in SQL (SQLite and PostgreSQL); preview conversations are left out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, Float, and_, cast, exists, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from server.conversations.timeline import END_REASONS
from server.db import Database
from server.models import Conversation, ConversationEvent, ConversationStatus, Flow

DAYS = 30
ACTIVE = "active"
OTHER = "other"


@dataclass
class FlowUsage:
    slug: str
    name: str
    conversations: list[int]  # one per day of `Usage.days`
    minutes: list[float]
    endings: Counter[str] = field(default_factory=Counter)  # END_CATEGORIES keys, "active", "other"

    @property
    def total_conversations(self) -> int:
        return sum(self.conversations)

    @property
    def total_minutes(self) -> float:
        return round(sum(self.minutes), 1)


@dataclass(frozen=True)
class Usage:
    days: list[date]
    flows: list[FlowUsage]


def _day(dialect: str, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp, whatever the session's time zone."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite stores UTC as text: date() reads its day


def _seconds(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * literal(86400.0, Float)


def category(status: str, end_reason: str | None, refused: bool) -> str:
    """The overview's end category of one conversation (see `timeline.END_CATEGORIES`)."""
    if refused:
        return "refused"
    if status == ConversationStatus.ACTIVE:
        return ACTIVE
    return END_REASONS.get(end_reason or "", OTHER)


async def usage(db: Database, today: date, days: int = DAYS) -> Usage:
    """The `days` days up to and including `today` (UTC), for every flow, used or not."""
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(today + timedelta(days=1), time(), UTC)
    dialect = db.dialect
    c = Conversation
    in_window = and_(c.preview.is_(False), c.created_at >= since, c.created_at < until)
    day = _day(dialect, c.created_at).label("day")
    # An active conversation counts up to its last activity: what it has lasted so far.
    seconds = _seconds(dialect, c.created_at, func.coalesce(c.ended_at, c.last_activity_at))
    event = ConversationEvent
    refused = and_(
        exists().where(event.conversation_id == c.id, event.kind == "refused"),
        ~exists().where(event.conversation_id == c.id, event.kind == "upstream_connect"),
    )
    async with db.reading() as session:
        flows = (
            await session.execute(select(Flow.id, Flow.slug, Flow.display_name).order_by(Flow.slug))
        ).all()
        per_day = (
            await session.execute(
                select(c.flow_id, day, func.count(), func.sum(seconds))
                .where(in_window)
                .group_by(c.flow_id, day)
            )
        ).all()
        each = select(c.flow_id, c.status, c.end_reason, refused.label("refused")).where(in_window).subquery()
        endings = (
            await session.execute(
                select(
                    each.c.flow_id, each.c.status, each.c.end_reason, each.c.refused, func.count()
                ).group_by(each.c.flow_id, each.c.status, each.c.end_reason, each.c.refused)
            )
        ).all()
    window = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(window)}
    by_id = {fid: FlowUsage(slug, name, [0] * days, [0.0] * days) for fid, slug, name in flows}
    for flow_id, when, count, total in per_day:
        when = when if isinstance(when, date) else date.fromisoformat(str(when))
        usage_of = by_id.get(flow_id)
        if usage_of is not None and when in index:
            usage_of.conversations[index[when]] = int(count)
            usage_of.minutes[index[when]] = round(max(float(total or 0), 0.0) / 60, 1)
    for flow_id, status, end_reason, was_refused, count in endings:
        if flow_id in by_id:
            by_id[flow_id].endings[category(str(status), end_reason, bool(was_refused))] += int(count)
    return Usage(window, list(by_id.values()))
