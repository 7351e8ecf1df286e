"""/api/v1: page transcript ingest (session token); sessions and transcripts for REST clients (bearer)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from server.api.auth import require_scope
from server.dependencies import Services, get_db, get_services
from server.errors import ServiceError
from server.models import Flow, Instant, Session
from server.transcripts.formats import as_markdown, as_text
from server.transcripts.ingest import PageBatch, ingest_page_batch
from server.transcripts.merge import CanonicalEntry
from server.transcripts.store import (
    SessionFilter,
    canonical_transcript,
    erase_session,
    get_session,
    iterate_sessions,
    list_sessions,
    template_version_of,
)

router = APIRouter(prefix="/api/v1", tags=["v1"])
READ = Depends(require_scope("transcripts:read"))
DELETE = Depends(require_scope("transcripts:delete"))


class ErrorBody(BaseModel):
    code: str
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 415)
}


class IngestAnswer(BaseModel):
    stored: int
    highest_seq: int
    status: str


class SessionSummary(BaseModel):
    id: str
    flow: str
    status: str
    created_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    duration_seconds: float | None


class SessionDetail(SessionSummary):
    dpp_template: dict[str, Any] | None
    dpp: dict[str, Any] | None
    visitor_context: dict[str, str]


class SessionList(BaseModel):
    items: list[SessionSummary]
    next_cursor: str | None


class TranscriptLine(BaseModel):
    seq: int
    role: Literal["Avatar", "User"]
    text: str
    timestamp: datetime
    sources: list[str]
    pronunciation_score: int | None = Field(
        default=None, description="0-100, on User lines when the Iframe SDK scored them"
    )


class Transcript(BaseModel):
    session_id: str
    entries: list[TranscriptLine]


def summary(session: Session, flow: Flow) -> SessionSummary:
    duration = (session.ended_at - session.created_at).total_seconds() if session.ended_at else None
    return SessionSummary(
        id=session.id,
        flow=flow.slug,
        status=session.status,
        created_at=session.created_at,
        ended_at=session.ended_at,
        end_reason=session.end_reason,
        duration_seconds=duration,
    )


def lines(entries: list[CanonicalEntry]) -> list[TranscriptLine]:
    return [
        TranscriptLine(
            seq=e.seq,
            role=e.role,
            text=e.text,
            timestamp=e.timestamp,
            sources=list(e.sources),
            pronunciation_score=e.pronunciation_score,
        )
        for e in entries
    ]


def require_json(request: Request) -> None:
    # A dependency runs before body validation, so the caller hears about the media type first.
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ServiceError(415, "unsupported_media_type", "send the batch as application/json")


@router.post(
    "/page/transcript", response_model=IngestAnswer, responses=ERRORS, dependencies=[Depends(require_json)]
)
async def ingest_from_page(
    batch: PageBatch,
    services: Annotated[Services, Depends(get_services)],
    db: Annotated[AsyncSession, Depends(get_db)],
) -> IngestAnswer:
    """Hosted pages post transcript lines here, also via `navigator.sendBeacon`.

    Idempotent per (session, seq): a retried batch stores nothing twice, a rejected batch stores nothing at
    all. The answer's `highest_seq` tells the page from where to resend."""
    result = await ingest_page_batch(db, services.signer, batch)
    return IngestAnswer(stored=result.stored, highest_seq=result.highest_seq, status=result.status)


@router.get("/sessions", response_model=SessionList, responses=ERRORS, dependencies=[READ])
async def sessions(
    db: Annotated[AsyncSession, Depends(get_db)],
    flow: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["created", "active", "ended", "expired"] | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SessionList:
    """Sessions, newest first; pass `next_cursor` back as `cursor` for the next page."""
    rows, next_cursor = await list_sessions(db, SessionFilter(flow, status, since, until), cursor, limit)
    return SessionList(items=[summary(s, f) for s, f in rows], next_cursor=next_cursor)


@router.get("/sessions/{session_id}", response_model=SessionDetail, responses=ERRORS, dependencies=[READ])
async def session_detail(session_id: str, db: Annotated[AsyncSession, Depends(get_db)]) -> SessionDetail:
    session, flow = await get_session(db, session_id)
    return SessionDetail(
        **summary(session, flow).model_dump(),
        dpp_template=await template_version_of(db, session),
        dpp=session.rendered_dpp,
        visitor_context=session.visitor_context,
    )


@router.get(
    "/sessions/{session_id}/transcript",
    response_model=Transcript,
    responses={**ERRORS, 200: {"content": {"text/plain": {}, "text/markdown": {}}}},
    dependencies=[READ],
)
async def transcript(
    session_id: str,
    db: Annotated[AsyncSession, Depends(get_db)],
    format: Literal["json", "text", "markdown"] = "json",
    timestamps: bool = False,
) -> Response:
    """The canonical transcript: each line once, in order, with the sources that reported it."""
    await get_session(db, session_id)
    entries = await canonical_transcript(db, session_id)
    if format == "text":
        return PlainTextResponse(as_text(entries, timestamps))
    if format == "markdown":
        return PlainTextResponse(as_markdown(entries, timestamps), media_type="text/markdown")
    body = Transcript(session_id=session_id, entries=lines(entries))
    return Response(body.model_dump_json(), media_type="application/json")


@router.delete("/sessions/{session_id}", status_code=204, responses=ERRORS, dependencies=[DELETE])
async def erase(session_id: str, db: Annotated[AsyncSession, Depends(get_db)]) -> Response:
    """Erase a session and its whole transcript."""
    await erase_session(db, session_id)
    return Response(status_code=204)


CSV_COLUMNS = ["session_id", "flow", "seq", "role", "text", "timestamp", "sources", "pronunciation_score"]


@router.get(
    "/export",
    responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    dependencies=[READ],
)
async def export(
    services: Annotated[Services, Depends(get_services)],
    format: Literal["ndjson", "csv"] = "ndjson",
    flow: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["created", "active", "ended", "expired"] | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
) -> StreamingResponse:
    """Stream sessions with transcripts: NDJSON (a session per line) or CSV (a transcript line per row)."""
    filters = SessionFilter(flow, status, since, until)

    async def rows() -> AsyncIterator[str]:
        async with services.sessions() as db:  # the request's session closes before streaming ends
            if format == "csv":
                yield _csv_line(CSV_COLUMNS)
            async for session, flow_row in iterate_sessions(db, filters):
                entries = await canonical_transcript(db, session.id)
                if format == "ndjson":
                    record = summary(session, flow_row).model_dump(mode="json")
                    record["entries"] = [line.model_dump(mode="json") for line in lines(entries)]
                    yield json.dumps(record, ensure_ascii=False) + "\n"
                else:
                    for e in entries:
                        yield _csv_line(
                            [
                                session.id,
                                flow_row.slug,
                                e.seq,
                                e.role,
                                e.text,
                                e.timestamp.isoformat(),
                                " ".join(e.sources),
                                "" if e.pronunciation_score is None else e.pronunciation_score,
                            ]
                        )

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(rows(), media_type=media)


def _csv_line(values: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()
