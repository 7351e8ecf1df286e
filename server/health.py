"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.dependencies import DbDep
from server.migrate import unready_reason

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, db: DbDep) -> JSONResponse:
    """The database answers and its schema is at the newest migration; not once SIGTERM arrived."""
    if getattr(request.app.state, "draining", False):
        return JSONResponse({"status": "unavailable", "reason": "shutting_down"}, 503)
    reason, revision = await unready_reason(db)
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    return JSONResponse({"status": "ready", "revision": revision})
