"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.dependencies import DbDep, SharedDep
from server.migrate import unready_reason
from server.redis_state import FallbackState

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(db: DbDep, shared: SharedDep) -> JSONResponse:
    """The database answers and its schema is at the newest migration.

    `shared_state` says where rate limits and counters live now: "redis", or "process" (no Redis configured,
    or Redis away; the instance then limits on its own and stays ready)."""
    reason, revision = await unready_reason(db)
    kind = await shared.check() if isinstance(shared, FallbackState) else shared.kind
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason, "shared_state": kind}, 503)
    return JSONResponse({"status": "ready", "revision": revision, "shared_state": kind})
