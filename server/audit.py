"""The audit log: who changed which flow, template, token or account, when, and what (secrets masked).

Services write an entry in the same transaction as the change it describes, so neither exists alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import Database
from server.models import AuditEntry

# Field names whose values are never shown whole: Kaltura ids, TURN credentials, token material.
SECRET_FIELDS = frozenset(
    {"client_id", "flow_id", "credential", "username", "password", "password_hash", "token", "token_hash"}
)
# relay: the global kill switch
TARGET_TYPES = ("flow", "template", "token", "admin", "conversation", "relay")
PAGE_SIZE = 50


def mask(value: Any) -> Any:
    """'••••' and the last four characters of a string; other values as '••••'."""
    if isinstance(value, str) and len(value) > 8:
        return f"••••{value[-4:]}"
    return "••••" if value not in (None, "") else value


def masked(document: Any) -> Any:
    """A copy of a JSON-like document with every secret field masked, at any depth."""
    if isinstance(document, dict):
        return {k: mask(v) if k in SECRET_FIELDS else masked(v) for k, v in document.items()}
    if isinstance(document, list):
        return [masked(item) for item in document]
    return document


def record(
    session: AsyncSession,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    before: Any = None,
    after: Any = None,
) -> None:
    """Add an entry to the caller's transaction (it commits or rolls back with the change)."""
    if target_type not in TARGET_TYPES:
        raise ValueError(f"unknown audit target type {target_type!r}")
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            target_type=target_type,
            target=target[:200],
            before=masked(before),
            after=masked(after),
        )
    )


@dataclass(frozen=True)
class AuditFilter:
    target_type: str | None = None
    target: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # paging: entries older than this one
    after_id: int | None = None  # paging back: the entries just newer than this one


async def entries(db: Database, where: AuditFilter, limit: int = PAGE_SIZE) -> list[AuditEntry]:
    """Newest first, at most `limit`: the newest that match, or with `after_id` the oldest of those newer
    than it (the page before, when paging back)."""
    order = AuditEntry.id.asc() if where.after_id else AuditEntry.id.desc()
    query = select(AuditEntry).order_by(order).limit(limit)
    if where.target_type:
        query = query.where(AuditEntry.target_type == where.target_type)
    if where.target:
        query = query.where(AuditEntry.target == where.target)
    if where.actor:
        query = query.where(AuditEntry.actor == where.actor)
    if where.since:
        query = query.where(AuditEntry.at >= where.since)
    if where.until:
        query = query.where(AuditEntry.at < where.until)
    if where.before_id:
        query = query.where(AuditEntry.id < where.before_id)
    if where.after_id:
        query = query.where(AuditEntry.id > where.after_id)
    async with db.reading() as session:
        found = list((await session.execute(query)).scalars())
    return found[::-1] if where.after_id else found
