"""/api/docs: the OpenAPI reference, rendered by Swagger UI served from our own origin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from server.dependencies import NonceDep, TemplatesDep

router = APIRouter()


@router.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
async def api_docs(request: Request, templates: TemplatesDep, nonce: NonceDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "api-docs.html", {"nonce": nonce})
