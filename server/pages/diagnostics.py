"""POST /api/v1/page/diagnostics: a hosted page reports an SDK error, or how its visitor ended the call.

Authenticated by the page's token, limited per conversation and in size; what it says goes on the
conversation's diagnostics timeline (a code and at most 200 characters of message, never transcript text).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from server.conversations import timeline
from server.conversations.page_token import read_page_token
from server.dependencies import DbDep, SharedDep, SignerDep
from server.errors import Invalid, TooManyRequests
from server.pages.small_json import read_small_json

router = APIRouter(include_in_schema=False)
PATH = "/api/v1/page/diagnostics"
MAX_BODY_BYTES = 2048
REPORTS_PER_MINUTE = 6  # per conversation, with a burst of `REPORT_BURST`
REPORT_BURST = 10


class PageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, Field(max_length=4096)]
    kind: Literal["sdk_error", "end"]
    code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    message: Annotated[str, Field(max_length=200)] = ""


@router.post(PATH, status_code=204)
async def report(request: Request, db: DbDep, signer: SignerDep, shared: SharedDep) -> Response:
    sent = await read_small_json(request, PageReport, MAX_BODY_BYTES, "report")
    if sent.kind == "end" and sent.code not in timeline.PAGE_END_REASONS:
        raise Invalid(
            "invalid_report", f"code: an end report says one of {', '.join(timeline.PAGE_END_REASONS)}"
        )
    conversation_id = read_page_token(signer, sent.token).conversation_id
    wait = await shared.take(
        f"page-reports:{conversation_id}", rate=REPORTS_PER_MINUTE / 60, burst=REPORT_BURST
    )
    if wait:
        raise TooManyRequests(
            "reports_rate_limited", f"too many reports for this conversation; retry in {math.ceil(wait)} s"
        )
    await timeline.page_report(db, signer, sent.token, sent.kind, sent.code, sent.message)
    return Response(status_code=204)
