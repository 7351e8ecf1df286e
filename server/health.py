"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.dependencies import Services, get_services
from server.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    """The database answers and its schema is at the newest migration."""
    try:
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        current = await current_revision(services.engine)
    except (SQLAlchemyError, OSError) as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": f"database unreachable: {type(exc).__name__}"}, 503
        )
    head = head_revision()
    if current != head:
        return JSONResponse(
            {
                "status": "unavailable",
                "reason": f"migrations not applied (database at {current}, code at {head})",
            },
            503,
        )
    return JSONResponse({"status": "ready", "revision": current})
