"""/api/docs: the OpenAPI reference, rendered by Swagger UI served from our own origin."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from server.dependencies import NonceDep, TemplatesDep

router = APIRouter()


@router.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
async def api_docs(request: Request, templates: TemplatesDep, nonce: NonceDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "api-docs.html", {"nonce": nonce})


def install_openapi(app: FastAPI) -> None:
    """Serve an OpenAPI document where each operation lists only the errors it gives.

    FastAPI documents a 422 on every operation with parameters; ours answer invalid input with a 400 whose
    body is the usual `{"code", "message"}`, which the operations document themselves.
    """

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
