"""The audit log page: newest first, filtered by what, target, who and dates, a page at a time, each entry
with a per-field diff of before and after (secrets were masked when the entry was written)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from server import audit
from server.admin.console import ConsoleDep
from server.admin.day_filter import day_span
from server.audit import TARGET_TYPES, AuditFilter
from server.security.headers import ADMIN_PREFIX

router = APIRouter()
AUDIT = f"{ADMIN_PREFIX}/audit"
PAGE_SIZE = 50
MAX_FILTER = 254


@dataclass(frozen=True)
class Change:
    field: str
    before: str
    after: str


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def changes(before: Any, after: Any) -> list[Change]:
    """What an entry changed, field by field: the fields that differ (all of them on create or delete)."""
    if isinstance(before, dict) or isinstance(after, dict):
        old = before if isinstance(before, dict) else {}
        new = after if isinstance(after, dict) else {}
        names = [*new, *(key for key in old if key not in new)]
        return [
            Change(name, _text(old.get(name)), _text(new.get(name)))
            for name in names
            if old.get(name) != new.get(name)  # a field absent and a field None read the same
        ]
    if before == after:
        return []
    return [Change("value", _text(before), _text(after))]


def _entry_id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 12 else None


@router.get(AUDIT, response_class=HTMLResponse)
async def audit_log(
    console: ConsoleDep,
    what: str = "",
    target: str = "",
    who: str = "",
    since: str = "",
    until: str = "",
    before: str = "",
    after: str = "",
) -> HTMLResponse:
    filters = {"what": what, "target": target.strip(), "who": who.strip(), "since": since, "until": until}
    errors: dict[str, str] = {}
    if what and what not in TARGET_TYPES:
        errors["what"] = f"Choose one of: {', '.join(TARGET_TYPES)}."
    for name in ("target", "who"):
        if len(filters[name]) > MAX_FILTER:
            errors[name] = f"At most {MAX_FILTER} characters."
    start, end = day_span(since, until, errors)
    found: list[Any] = []
    newer = older = None
    if not errors:
        where = AuditFilter(
            target_type=what or None,
            target=filters["target"] or None,
            actor=filters["who"] or None,
            since=start,
            until=end,
            before_id=_entry_id(before),
            after_id=_entry_id(after),
        )
        found = await audit.entries(console.db, where, PAGE_SIZE + 1)
        more = len(found) > PAGE_SIZE
        if where.after_id:  # paging back: the extra one is the newest
            found = found[1:] if more else found
            has_newer, has_older = more, True
        else:
            found = found[:PAGE_SIZE]
            has_newer, has_older = where.before_id is not None, more
        kept = {key: value for key, value in filters.items() if value}
        if found and has_newer:
            newer = f"{AUDIT}?{urlencode({**kept, 'after': found[0].id})}"
        if found and has_older:
            older = f"{AUDIT}?{urlencode({**kept, 'before': found[-1].id})}"
    return console.render(
        "audit.html",
        status=400 if errors else 200,
        section="audit",
        filters=filters,
        errors=errors,
        what_options=[("", "Anything"), *((kind, kind) for kind in TARGET_TYPES)],
        entries=[(entry, changes(entry.before, entry.after)) for entry in found],
        newer=newer,
        older=older,
    )
