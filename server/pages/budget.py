"""POST /api/v1/page/budget: an Iframe-mode page asks whether its conversation may start or go on.

Authenticated by the page's token, limited per conversation and in size, like the other page endpoints.
What the answers mean and how they are counted: `server.page_budgets`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from server.errors import TooManyRequests
from server.page_budgets import PageBudgets
from server.pages.small_json import read_small_json

router = APIRouter()
PATH = "/api/v1/page/budget"
MAX_BODY_BYTES = 6144  # a token (at most 4 KB) and an action


class BudgetQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, Field(min_length=1, max_length=4096, description="the page's session token")]
    action: Literal["admit", "beat", "end"] = Field(
        description="admit: before the meeting loads; beat: every heartbeat_seconds while it runs; end: the"
        " call ended (its slot comes free at once)"
    )


class BudgetAnswer(BaseModel):
    go: bool = Field(description="true: start (admit) or go on (beat); false: do not start, or stop now")
    reason: str | None = Field(
        default=None,
        description="why not: kill_switch, budget_minutes, budget_concurrent, per_address (too many"
        " conversations from the client's address, in either mode, at admit), budget_duration, budget_idle,"
        " ended_by_operator, or the end reason of a conversation that has ended",
    )
    message: str | None = Field(default=None, description="the sentence the page shows its visitor")
    heartbeat_seconds: float = Field(description="how often a live page beats")


class ErrorBody(BaseModel):
    code: str
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": meaning}
    for status, meaning in {
        400: "The body is malformed; the message names the part.",
        401: "The page token is not valid (forged, expired, not a page token).",
        404: "The flow is gone or disabled.",
        409: "The conversation has ended or was erased (admit), never started (beat), or its flow is in"
        " Socket mode (the relay applies its budgets).",
        413: f"The body is over {MAX_BODY_BYTES} bytes.",
        415: "The body is not application/json.",
        429: "Too many questions for this conversation; the message says when to retry.",
    }.items()
}


@router.post(
    PATH,
    response_model=BudgetAnswer,
    responses=ERRORS,
    tags=["v1"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BudgetQuestion.model_json_schema()}},
        }
    },
)
async def ask(request: Request) -> BudgetAnswer:
    """Iframe-mode pages ask here before loading the meeting, then beat while it runs, and say when it ended.

    Refusals and stops are answers (`go: false`, with the reason and the visitor's sentence), not errors.
    A page that stops beating (its tab closed) gives its conversation's slots back after three heartbeats.
    The client address that the slot per address is held under is the request's (the trusted balancer's
    X-Forwarded-For)."""
    sent = await read_small_json(request, BudgetQuestion, MAX_BODY_BYTES, "question")
    page_budgets: PageBudgets = request.app.state.page_budgets
    claims = page_budgets.claims(sent.token)
    wait = await page_budgets.limit(claims)
    if wait:
        raise TooManyRequests(
            "budget_rate_limited",
            f"too many budget questions for this conversation; retry in {math.ceil(wait)} s",
        )
    every = page_budgets.heartbeat_seconds
    # As uvicorn gives it (X-Forwarded-For only from the trusted balancer), like the relay's connects.
    address = request.client.host if request.client else ""
    if sent.action == "end":
        await page_budgets.end(claims, address)
        return BudgetAnswer(go=False, heartbeat_seconds=every)
    ask_ = page_budgets.admit if sent.action == "admit" else page_budgets.beat
    verdict = await ask_(claims, sent.token, address)
    return BudgetAnswer(
        go=verdict.go, reason=verdict.reason, message=verdict.message, heartbeat_seconds=every
    )
