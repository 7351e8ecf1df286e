"""/api/v1: page transcript ingest (session token); sessions and transcripts for REST clients (bearer)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from server import budgets
from server.api.auth import require_scope
from server.conversations import lifecycle, listing
from server.conversations.lifecycle import STOP_SENTENCES
from server.conversations.listing import ConversationFilter
from server.dependencies import DbDep, MetricsDep, SharedDep
from server.errors import AppError, UnsupportedMediaType
from server.models import Conversation, ConversationStatus, Instant
from server.transcripts import store
from server.transcripts.formats import as_markdown, as_text
from server.transcripts.ingest import PageBatch
from server.transcripts.ingest_group import IngestGroup
from server.transcripts.merge import CanonicalEntry

router = APIRouter(prefix="/api/v1", tags=["v1"])
READ = Depends(require_scope("transcripts:read"))
DELETE = Depends(require_scope("transcripts:delete"))
BUDGETS = Depends(require_scope("budgets:read"))


class ErrorBody(BaseModel):
    code: str
    message: str


ERROR_MEANINGS = {
    400: "The request is malformed; the message names the part.",
    401: "No token, or one that is not valid, expired or revoked.",
    403: "The token lacks the scope this operation needs.",
    404: "No such session.",
    409: "The conversation ended more than 2 minutes ago (or was erased); nothing new can be added.",
    413: "The request body is too large, or the session's transcript would exceed a cap.",
    415: "The body is not application/json.",
    429: "Too many lines for this session too quickly; the message says when to retry.",
    503: "Transcript storage is unavailable for now (a database restart); send the same lines again shortly.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers one operation can give, for its OpenAPI description."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


READ_ERRORS = (400, 401, 403)


class IngestAnswer(BaseModel):
    stored: int
    highest_seq: int
    status: str
    recorded: bool = Field(
        default=True, description="False: this flow keeps no transcript (privacy); lines were discarded."
    )
    message: str | None = Field(
        default=None,
        description="The conversation was stopped for a reason its visitor should read (a budget, a kill"
        " switch, an operator): that sentence, for the page to show.",
    )


class SessionSummary(BaseModel):
    id: str
    flow: str
    status: str
    created_at: datetime
    ended_at: datetime | None
    end_reason: str | None = Field(
        description="How it ended: `end_phrase` (the page heard an end phrase), `conversation_ended` (the "
        "avatar service ended it), `visitor_ended` (the End button), `page_closed` (the page's last "
        "transcript flush), `time_expired` (the service's time limit), `idle_timeout` (no activity)"
    )
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
    verified: bool = Field(
        description="false for an Avatar line only the page reported (the relay did not hear it): its words "
        "come from the visitor's browser and may be forged. Iframe-SDK flows have no relay, so there every "
        "Avatar line is false."
    )


class Transcript(BaseModel):
    session_id: str
    recorded: bool = Field(
        default=True,
        description="False: the session's flow has transcript recording off, so no lines are stored.",
    )
    entries: list[TranscriptLine]


def summary(conversation: Conversation, flow_slug: str) -> SessionSummary:
    c = conversation
    duration = (c.ended_at - c.created_at).total_seconds() if c.ended_at else None
    return SessionSummary(
        id=c.id,
        flow=flow_slug,
        status=c.status,
        created_at=c.created_at,
        ended_at=c.ended_at,
        end_reason=c.end_reason,
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
            verified=e.verified,
        )
        for e in entries
    ]


def require_json(request: Request) -> None:
    # A dependency runs before body validation, so the caller hears about the media type first.
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("unsupported_media_type", "send the batch as application/json")


@router.post(
    "/page/transcript",
    response_model=IngestAnswer,
    responses=errors(400, 401, 404, 409, 413, 415, 429, 503),
    dependencies=[Depends(require_json)],
)
async def ingest_from_page(batch: PageBatch, metrics: MetricsDep, request: Request) -> IngestAnswer:
    """Hosted pages post transcript lines here, also via `navigator.sendBeacon`.

    Idempotent per (session, seq): a retried batch stores nothing twice, a rejected batch stores nothing at
    all. The answer's `highest_seq` tells the page from where to resend. The first batch of a page starts
    its session. Lines still land for 2 minutes after the conversation ends (the relay, an operator or a
    budget may end it while the page holds its last lines); after that they are refused with 409."""
    group: IngestGroup = request.app.state.ingest_group  # written with concurrent batches, one commit
    try:
        result = await group.submit(batch)
    except AppError as exc:  # a refused batch stores none of its lines
        metrics.page_lines(0, len(batch.entries), exc.code)
        raise
    metrics.page_lines(result.stored, 0 if result.recorded else len(batch.entries), "not_recorded")
    return IngestAnswer(
        stored=result.stored,
        highest_seq=result.highest_seq,
        status=result.status,
        recorded=result.recorded,
        message=STOP_SENTENCES.get(result.end_reason or ""),
    )


@router.get("/sessions", response_model=SessionList, responses=errors(*READ_ERRORS), dependencies=[READ])
async def sessions(
    db: DbDep,
    flow: Annotated[str | None, Query(max_length=64)] = None,
    status: ConversationStatus | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SessionList:
    """Sessions (visitor conversations), newest first; pass `next_cursor` back as `cursor` for more."""
    rows, next_cursor = await listing.page_of(
        db, ConversationFilter(flow, status, since, until), cursor, limit
    )
    return SessionList(items=[summary(r.conversation, r.flow_slug) for r in rows], next_cursor=next_cursor)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionDetail,
    responses=errors(*READ_ERRORS, 404),
    dependencies=[READ],
)
async def session_detail(session_id: str, db: DbDep) -> SessionDetail:
    detail = await listing.detail_of(db, session_id)
    return SessionDetail(
        **summary(detail.conversation, detail.flow_slug).model_dump(),
        dpp_template=detail.template,
        dpp=detail.conversation.rendered_dpp,
        visitor_context=detail.conversation.visitor_context,
    )


@router.get(
    "/sessions/{session_id}/transcript",
    response_model=Transcript,
    responses={**errors(*READ_ERRORS, 404), 200: {"content": {"text/plain": {}, "text/markdown": {}}}},
    dependencies=[READ],
)
async def transcript(
    session_id: str,
    db: DbDep,
    format: Literal["json", "text", "markdown"] = "json",
    timestamps: bool = False,
) -> Response:
    """The canonical transcript: each line once, in order, with the sources that reported it."""
    entries = await store.transcript_of(db, session_id)
    recorded = await store.recorded(db, session_id)
    if not recorded and not entries and format != "json":
        note = "Transcript recording is off for this session's flow: no lines are stored.\n"
        return PlainTextResponse(note, media_type=f"text/{'markdown' if format == 'markdown' else 'plain'}")
    # Formatting a long transcript runs in a thread so the loop (the relay, /healthz) keeps answering.
    if format == "text":
        return PlainTextResponse(await asyncio.to_thread(as_text, entries, timestamps))
    if format == "markdown":
        body = await asyncio.to_thread(as_markdown, entries, timestamps)
        return PlainTextResponse(body, media_type="text/markdown")
    body = await asyncio.to_thread(_transcript_json, session_id, entries, recorded)
    return Response(body, media_type="application/json")


def _transcript_json(session_id: str, entries: list[CanonicalEntry], recorded: bool) -> str:
    return Transcript(session_id=session_id, recorded=recorded, entries=lines(entries)).model_dump_json()


@router.delete(
    "/sessions/{session_id}", status_code=204, responses=errors(401, 403, 404), dependencies=[DELETE]
)
async def erase(session_id: str, db: DbDep) -> Response:
    """Erase a session and its whole transcript."""
    await lifecycle.erase(db, session_id)
    return Response(status_code=204)


CSV_COLUMNS = [
    "session_id",
    "flow",
    "seq",
    "role",
    "text",
    "timestamp",
    "sources",
    "pronunciation_score",
    "verified",
]


@router.get(
    "/export",
    responses={**errors(*READ_ERRORS), 200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    dependencies=[READ],
)
async def export(
    db: DbDep,
    format: Literal["ndjson", "csv"] = "ndjson",
    flow: Annotated[str | None, Query(max_length=64)] = None,
    status: ConversationStatus | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
) -> StreamingResponse:
    """Stream sessions with transcripts: NDJSON (a session per line) or CSV (a transcript line per row)."""
    filters = ConversationFilter(flow, status, since, until)

    async def rows() -> AsyncIterator[str]:
        if format == "csv":
            yield _csv_line(CSV_COLUMNS)
        async for row, entries in store.export(db, filters):
            # A session at a time, formatted in a thread: the loop stays free between and during them.
            session = summary(row.conversation, row.flow_slug)
            if format == "ndjson":
                yield await asyncio.to_thread(_ndjson_record, session, entries)
            else:
                yield await asyncio.to_thread(_csv_rows, session, entries)

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(rows(), media_type=media)


# A cell starting with one of these is a formula to spreadsheet apps (=HYPERLINK(…), @SUM(…), DDE via +/-).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _neutralised(value: object) -> object:
    """Prefix a text cell that a spreadsheet would evaluate with a quote, so it is shown as typed."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _ndjson_record(session: SessionSummary, entries: list[CanonicalEntry]) -> str:
    record = session.model_dump(mode="json")
    record["entries"] = [line.model_dump(mode="json") for line in lines(entries)]
    return json.dumps(record, ensure_ascii=False) + "\n"


def _csv_rows(session: SessionSummary, entries: list[CanonicalEntry]) -> str:
    return "".join(
        _csv_line(
            [
                session.id,
                session.flow,
                e.seq,
                e.role,
                e.text,
                e.timestamp.isoformat(),
                " ".join(e.sources),
                "" if e.pronunciation_score is None else e.pronunciation_score,
                "true" if e.verified else "false",
            ]
        )
        for e in entries
    )


def _csv_line(values: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_neutralised(value) for value in values])
    return buffer.getvalue()


class FlowBudgetUsage(BaseModel):
    """One flow's session budget (null: no limit of that kind) and its use, counted across instances."""

    flow: str
    killed: bool = Field(description="The flow's own kill switch is on.")
    live: int | None = Field(
        description="Conversations live now (relayed, or on an Iframe-mode page that keeps beating);"
        " counted for flows with a cap only."
    )
    max_concurrent: int | None
    minutes_today: float = Field(
        description="Conversation minutes since midnight UTC: relayed, and counted by Iframe-mode pages'"
        " beats."
    )
    minutes_per_day: int | None
    max_duration_seconds: int | None
    idle_cut_seconds: int | None


class BudgetReport(BaseModel):
    all_killed: bool = Field(description="The global kill switch is on: every flow is stopped.")
    flows: list[FlowBudgetUsage]


@router.get("/budgets", response_model=BudgetReport, responses=errors(*READ_ERRORS), dependencies=[BUDGETS])
async def budget_report(db: DbDep, shared: SharedDep) -> BudgetReport:
    """Every flow's budget, its use today and the kill switches."""
    state = await budgets.load(db)
    return BudgetReport(
        all_killed=state.all_killed,
        flows=[
            FlowBudgetUsage(
                flow=row.budget.slug,
                killed=row.budget.killed,
                live=row.live,
                max_concurrent=row.budget.max_concurrent,
                minutes_today=row.minutes_today,
                minutes_per_day=row.budget.minutes_per_day,
                max_duration_seconds=row.budget.max_duration_seconds,
                idle_cut_seconds=row.budget.idle_cut_seconds,
            )
            for row in await budgets.usage(shared, state)
        ],
    )
