"""Conversations in the console: a filtered, paged list; one conversation with its transcript and
diagnostics timeline; downloads; erasure (admins only, audited)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from server import budgets, flows
from server.admin.console import ConsoleDep
from server.admin.day_filter import day_span
from server.conversations import listing, timeline
from server.conversations.listing import ConversationFilter
from server.dependencies import EnderDep
from server.errors import NotFound
from server.models import ConversationStatus
from server.security.headers import ADMIN_PREFIX
from server.transcripts import formats, store
from server.transcripts.merge import CanonicalEntry

router = APIRouter()
BASE = f"{ADMIN_PREFIX}/conversations"
PAGE_SIZE = 25
CONVERSATION_ID = r"^[0-9a-f]{32}$"
DOWNLOADS = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "json": "application/json",
}
STATUSES = [("", "Any"), ("active", "Active"), ("ended", "Ended")]
PREVIEWS = [("", "Any"), ("no", "Visitors only"), ("yes", "Previews only")]
END_LABELS = {reason: timeline.END_CATEGORIES[category] for reason, category in timeline.END_REASONS.items()}


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


@router.get(BASE, response_class=HTMLResponse)
async def conversations(
    console: ConsoleDep,
    flow: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    since: Annotated[str, Query(max_length=32)] = "",
    until: Annotated[str, Query(max_length=32)] = "",
    preview: Annotated[str, Query(max_length=8)] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
    deleted: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    known = [f.slug for f in await flows.list_flows(console.db)]
    errors: dict[str, str] = {}
    if flow and flow not in known:
        errors["flow"] = "No flow has this slug."
    if status not in {value for value, _ in STATUSES}:
        errors["status"] = "Choose active or ended."
    if preview not in {value for value, _ in PREVIEWS}:
        errors["preview"] = "Choose visitors or previews."
    start, end = day_span(since, until, errors)
    form = {"flow": flow, "status": status, "since": since, "until": until, "preview": preview}
    context: dict[str, Any] = {
        "form": form,
        "errors": errors,
        "flows": [("", "All flows"), *((slug, slug) for slug in known)],
        "statuses": STATUSES,
        "previews": PREVIEWS,
        "end_labels": END_LABELS,
        "duration_text": duration_text,
        "flash": "The conversation was deleted." if re.fullmatch(CONVERSATION_ID, deleted) else None,
    }
    if errors:
        return console.render("conversations/list.html", 400, section="conversations", rows=[], **context)
    filters = ConversationFilter(
        flow=flow or None,
        status=ConversationStatus(status) if status else None,
        since=start,
        until=end,
        preview={"yes": True, "no": False}.get(preview),
    )
    rows, next_cursor = await listing.page_of(console.db, filters, cursor or None, PAGE_SIZE)
    kept = {key: value for key, value in form.items() if value}
    return console.render(
        "conversations/list.html",
        section="conversations",
        rows=rows,
        next_page=f"{BASE}?{urlencode({**kept, 'cursor': next_cursor})}" if next_cursor else None,
        first_page=f"{BASE}?{urlencode(kept)}" if cursor else None,
        **context,
    )


@router.get(BASE + "/{conversation_id}", response_class=HTMLResponse)
async def conversation(console: ConsoleDep, conversation_id: str) -> HTMLResponse:
    detail = await listing.detail_of(console.db, conversation_id)
    entries = await store.transcript_of(console.db, conversation_id)
    events = await timeline.events_of(console.db, conversation_id)
    c = detail.conversation
    ended = c.ended_at or datetime.now(UTC)
    return console.render(
        "conversations/detail.html",
        section="conversations",
        detail=detail,
        c=c,
        entries=entries,
        events=events,
        kinds=timeline.KINDS,
        duration=duration_text((ended - c.created_at).total_seconds()),
        end_label=END_LABELS.get(c.end_reason or "", c.end_reason),
        flash="The conversation was ended." if console.request.query_params.get("done") == "ended" else None,
    )


@router.get(BASE + "/{conversation_id}/transcript.{extension}")
async def download(console: ConsoleDep, conversation_id: str, extension: str) -> Response:
    if extension not in DOWNLOADS:
        raise NotFound("unknown_format", "No such download: use .txt, .md or .json.")
    entries = await store.transcript_of(console.db, conversation_id)
    body = await asyncio.to_thread(_formatted, extension, conversation_id, entries)
    disposition = f'attachment; filename="conversation-{conversation_id}.{extension}"'
    return Response(body, media_type=DOWNLOADS[extension], headers={"content-disposition": disposition})


def _formatted(extension: str, conversation_id: str, entries: list[CanonicalEntry]) -> str:
    if extension == "json":
        return formats.as_json(conversation_id, entries)
    render = formats.as_markdown if extension == "md" else formats.as_text
    return render(entries, timestamps=True)


@router.post(BASE + "/{conversation_id}/end")
async def end(console: ConsoleDep, ender: EnderDep, conversation_id: str) -> Response:
    """End a live conversation: recorded (and audited) first, then every instance's relay is told."""
    if await budgets.end_conversation(console.db, conversation_id, console.admin.email):
        await ender.end_conversations("ended_by_operator", conversation_id=conversation_id)
    return console.redirect(f"{BASE}/{conversation_id}?done=ended")


@router.post(BASE + "/{conversation_id}/delete")
async def delete(console: ConsoleDep, conversation_id: str) -> Response:
    await store.erase_audited(console.db, conversation_id, console.admin.email)
    return console.redirect(f"{BASE}?{urlencode({'deleted': conversation_id})}")
