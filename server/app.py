"""The composition root: create_app(settings) wires settings, database, security and routers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import health
from server.api import docs, v1
from server.db import create_engine, create_sessionmaker
from server.dependencies import Services
from server.errors import ServiceError
from server.housekeeping import run_housekeeping
from server.pages import router as pages
from server.paths import STATIC_DIR, TEMPLATES_DIR
from server.relay import iframe_assets, whep
from server.relay.sockets import SOCKET_PATH, RelayHub
from server.sdk import SELF_HOSTED_URL_PREFIX
from server.security.headers import SecurityHeadersMiddleware
from server.security.limits import RequestLimitsMiddleware
from server.security.signing import Signer
from server.settings import Settings, load_settings

log = logging.getLogger("avatar_bff")

ERROR_TITLES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    414: "Address too long",
    422: "Invalid request",
    503: "Unavailable",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(
        ("/api/", "/healthz", "/readyz")
    ) or "text/html" not in request.headers.get("accept", "text/html")


class App(FastAPI):
    """FastAPI, except that Socket.IO traffic goes straight to the relay, ahead of every middleware.

    The relay has its own size limit and Origin check, and a relayed message would otherwise pass through
    each middleware's send and receive wrappers (and an idle socket keep their frames alive).
    """

    relay_asgi: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan" and scope["path"].startswith(f"/{SOCKET_PATH}/") and self.relay_asgi:
            await self.relay_asgi(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """Build the ASGI app for the given settings (tests pass their own)."""
    engine = create_engine(settings.effective_database_url)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    http = httpx.AsyncClient(follow_redirects=False, timeout=settings.whep_timeout_seconds)
    services = Services(
        settings, engine, create_sessionmaker(engine), Signer(settings.secret), templates, http
    )

    relay = RelayHub(services, [settings.public_url] if settings.public_url else None)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        housekeeping = asyncio.create_task(run_housekeeping(services))
        await relay.start()
        # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise stall every socket for tens of milliseconds under load.
        gc.freeze()
        yield
        await relay.stop()
        housekeeping.cancel()
        await http.aclose()
        await engine.dispose()

    app = App(
        title="avatar-bff API",
        version="1",
        description="Sessions and transcripts of hosted avatar conversations. Bearer tokens come from "
        '`avatar-bff create-token`. Every error is JSON: `{"code": …, "message": …}`.',
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.services = services

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        detail = (
            exc.detail if isinstance(exc, StarletteHTTPException) else "Something went wrong on our side."
        )
        if status >= 500 and not isinstance(exc, StarletteHTTPException):
            log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _wants_json(request):
            return JSONResponse({"code": f"http_{status}", "message": str(detail)}, status)
        title = ERROR_TITLES.get(status, "Error")
        return templates.TemplateResponse(
            request,
            "errors/error.html",
            {"status": status, "title": title, "message": detail},
            status_code=status,
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else "request"
        message = f"{where}: {errors[0]['msg']}" if errors else "invalid request"
        return JSONResponse({"code": "invalid_request", "message": message}, 400)

    async def service_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return JSONResponse({"code": exc.code, "message": exc.message}, exc.status)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, http_error)

    app.include_router(health.router)
    app.include_router(pages.router)
    app.include_router(v1.router)
    app.include_router(docs.router)
    app.include_router(whep.router)
    app.include_router(iframe_assets.router)

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "index.html", {})

    settings.sdk_dir.mkdir(parents=True, exist_ok=True)
    app.mount(SELF_HOSTED_URL_PREFIX, StaticFiles(directory=settings.sdk_dir), name="sdk")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(
        RequestLimitsMiddleware,
        max_query_bytes=settings.max_query_bytes,
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(SecurityHeadersMiddleware)  # every response, refusals included
    app.relay_asgi = relay.app
    app.state.relay = relay
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and `avatar-bff serve` (settings from the environment)."""
    return create_app(load_settings())
