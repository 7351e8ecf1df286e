"""/api/docs: the OpenAPI reference, rendered by Swagger UI served from our own origin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from server.dependencies import Services, csp_nonce, get_services

router = APIRouter()


@router.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
async def api_docs(request: Request, services: Annotated[Services, Depends(get_services)]) -> HTMLResponse:
    return services.templates.TemplateResponse(request, "api-docs.html", {"nonce": csp_nonce(request)})
