"""The composition root: create_app(settings) wires settings, database, security and routers."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

from server import health, metrics_endpoint
from server.admin.router import install as install_admin_console
from server.api import docs, v1
from server.db import Database
from server.errors import AppError
from server.housekeeping import run_housekeeping
from server.metrics import Metrics
from server.page_budgets import PageBudgets
from server.pages import budget as page_budget
from server.pages import diagnostics
from server.pages import router as pages
from server.pages.assets import VERSIONED_PREFIX, ShortCacheStaticFiles, StaticAssets, VersionedStaticFiles
from server.paths import STATIC_DIR, TEMPLATES_DIR
from server.redis_state import FallbackState, shared_state_for
from server.relay import iframe_assets, whep
from server.relay.events import RELAY_EVENT_NAMES
from server.relay.session_ids import prefix_session_ids
from server.relay.sockets import SOCKET_PATH, RelayHub
from server.request_context import REQUEST_ID_HEADER, request_id, request_id_for
from server.sdk import SELF_HOSTED_URL_PREFIX
from server.security.headers import SecurityHeadersMiddleware
from server.security.limits import RequestLimitsMiddleware
from server.security.signing import Signer
from server.settings import Settings, load_settings
from server.transcripts.ingest import IngestLimits, IngestRateLimiter
from server.transcripts.ingest_group import IngestGroup

log = logging.getLogger("avatar_bff")

ERROR_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    414: "Address too long",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Something went wrong",
    502: "Avatar service error",
    503: "Unavailable",
    504: "Avatar service timeout",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(
        ("/api/", "/healthz", "/readyz", "/relay/")
    ) or "text/html" not in request.headers.get("accept", "text/html")


class App(FastAPI):
    """FastAPI, except that Socket.IO traffic goes straight to the relay, ahead of every middleware.

    The relay has its own size limit and Origin check, and a relayed message would otherwise pass through
    each middleware's send and receive wrappers (and an idle socket keep their frames alive). Every other
    HTTP request gets a request id (logged, echoed in X-Request-ID) and its latency measured by route.
    """

    relay_asgi: Any = None
    page_fast_path: pages.PageFastPath | None = None  # page views, likewise: see PageFastPath
    metrics: Metrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and scope["path"].startswith(f"/{SOCKET_PATH}/") and self.relay_asgi:
            if self.state.draining and _opens_a_socket(scope):
                await _stopping(scope, send)
                return
            await self.relay_asgi(scope, receive, send)
        elif scope["type"] == "http" and self.metrics is not None:
            await self._observed(scope, receive, send, self.metrics)
        elif self.page_fast_path is not None and self.page_fast_path.handles(scope):
            await self.page_fast_path(scope, receive, send)
        else:
            await self.stack(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The framework with its middleware and routes: whatever the page fast path does not answer."""
        await super().__call__(scope, receive, send)

    async def drain(self) -> None:
        """SIGTERM (`serve` calls this before uvicorn's own shutdown, its listeners already closed): readiness
        fails, new sockets are turned away, and every relayed browser is told to reconnect elsewhere."""
        self.state.draining = True
        await self.state.relay.drain()

    async def _observed(self, scope: Scope, receive: Receive, send: Send, metrics: Metrics) -> None:
        rid = request_id_for(scope["headers"])
        header = (REQUEST_ID_HEADER, rid.encode())
        status = 500  # unless a response starts
        route = None
        reset = request_id.set(rid)
        started = time.perf_counter()
        try:
            fast = self.page_fast_path
            if fast is not None and fast.handles(scope):
                route = pages.PAGE_ROUTE  # the fast path does no routing
                if await fast.serve(scope, send, header):
                    status = 200
                    return

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            await self.stack(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            metrics.http(route or _route_template(scope), scope["method"], status, elapsed)
            request_id.reset(reset)


def _route_template(scope: Scope) -> str:
    """The route that answered, as its template (`/api/v1/sessions/{session_id}`): never the raw path, which
    would make a series per URL. Unrouted requests (404s) are all "unmatched"."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    path = str(getattr(route, "path", "unmatched"))
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


def _opens_a_socket(scope: Any) -> bool:
    """An Engine.IO handshake (no `sid` yet): a new socket, as opposed to one already open here."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return "sid" not in query


async def _stopping(scope: Any, send: Any) -> None:
    # 503: a balancer may retry the handshake on another instance (nginx's `proxy_next_upstream http_503`);
    # socket.io-client, reaching this server straight, retries on its own.
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1012})
        return
    body = b'{"code":"shutting_down","message":"This server is stopping; connect again."}'
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, on_started: Callable[[], None] | None = None) -> FastAPI:
    """Build the ASGI app for the given settings (tests pass their own).

    `on_started` runs once startup is complete (`serve` freezes the collector's view of the heap there).
    """
    db = Database(settings.effective_database_url)
    signer = Signer(settings.secret)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    assets = StaticAssets(STATIC_DIR)
    templates.env.globals["static_url"] = assets.url
    upstream_http = httpx.AsyncClient(follow_redirects=False, timeout=settings.whep_timeout_seconds)
    shared = shared_state_for(settings)  # in process, or Redis with an in-process stand-in
    relay = RelayHub(settings, db, signer, [settings.public_url] if settings.public_url else None, shared)
    metrics = Metrics(RELAY_EVENT_NAMES)
    metrics.watch(relay)
    relay.metrics = metrics
    prefix_session_ids(relay.sio, settings.instance_id)  # the balancer's stickiness reads it
    idle_after = timedelta(seconds=settings.session_idle_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if isinstance(shared, FallbackState):
            await shared.start()
        housekeeping = asyncio.create_task(
            run_housekeeping(
                db,
                idle_after,
                timedelta(seconds=settings.session_token_ttl_seconds),
                settings.housekeeping_interval_seconds,
                (settings.admin_idle, settings.admin_lifetime),
            )
        )
        await relay.start()
        if on_started is not None:
            on_started()
        yield
        await relay.stop()
        housekeeping.cancel()
        await upstream_http.aclose()
        if isinstance(shared, FallbackState):
            await shared.aclose()
        await db.dispose()

    app = App(
        title="avatar-bff API",
        version="1",
        description="Sessions and transcripts of hosted avatar conversations. Bearer tokens come from "
        '`avatar-bff create-token`. Every error is JSON: `{"code": …, "message": …}`.',
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
        # Starlette's trailing-slash redirect writes the client's Host header into its Location.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.signer = signer
    app.state.templates = templates
    app.state.upstream_http = upstream_http
    app.state.relay = relay
    app.state.draining = False  # set once SIGTERM arrived: see App.drain
    app.state.shared = shared
    app.state.timeline = relay.timeline
    app.state.metrics = metrics
    token = settings.metrics_token
    app.state.metrics_token_digest = (
        None if token is None else metrics_endpoint.token_digest(token.get_secret_value())
    )
    # Page transcript ingest per conversation, in buckets the instances share.
    app.state.ingest_limiter = IngestRateLimiter(
        shared, settings.transcript_lines_per_second, settings.transcript_line_burst
    )
    # Iframe-mode pages ask here before and while their meeting runs (the relay never sees it).
    app.state.page_budgets = PageBudgets(
        db, signer, shared, relay.timeline, settings.budget_check_seconds, settings.relay_max_per_address
    )
    app.state.pages = pages.HostedPages(settings, db, signer, templates, assets, shared)
    # Concurrent page batches share one transaction (group commit); each is answered after its commit.
    app.state.ingest_group = IngestGroup(
        db,
        signer,
        IngestLimits(settings.transcript_max_lines, settings.transcript_max_bytes),
        app.state.ingest_limiter,
    )

    def error_response(request: Request, status: int, code: str, message: str) -> Response:
        """The one shape of every refusal: JSON for API clients, the error page for browsers."""
        if _wants_json(request):
            return JSONResponse({"code": code, "message": message}, status)
        title = ERROR_TITLES.get(status, "Error")
        return templates.TemplateResponse(
            request,
            "errors/error.html",
            {"status": status, "title": title, "message": message},
            status_code=status,
        )

    async def app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return error_response(request, exc.status, exc.code, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own refusals: no route (404), wrong method (405).
        assert isinstance(exc, StarletteHTTPException)
        title = ERROR_TITLES.get(exc.status_code, "Error").lower().replace(" ", "_")
        return error_response(request, exc.status_code, title, str(exc.detail))

    async def validation_error(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else "request"
        message = f"{where}: {errors[0]['msg']}" if errors else "invalid request"
        return error_response(request, 400, "invalid_request", message)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "Something went wrong on our side.")

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)

    app.include_router(health.router)
    app.include_router(metrics_endpoint.router)
    app.include_router(pages.router)
    app.include_router(v1.router)
    app.include_router(diagnostics.router)
    app.include_router(page_budget.router)
    app.include_router(docs.router)
    docs.install_openapi(app)
    app.include_router(whep.router)
    app.include_router(iframe_assets.router)
    install_admin_console(app, settings, shared)

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "index.html", {})

    # The directory may not exist until `avatar-bff vendor-sdk` fills it; until then its URLs answer 404.
    app.mount(SELF_HOSTED_URL_PREFIX, StaticFiles(directory=settings.sdk_dir, check_dir=False), name="sdk")
    app.mount(VERSIONED_PREFIX, VersionedStaticFiles(assets), name="static-versioned")
    app.mount("/static", ShortCacheStaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(
        RequestLimitsMiddleware,
        max_query_bytes=settings.max_query_bytes,
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(SecurityHeadersMiddleware)  # every response, refusals included
    app.relay_asgi = relay.app
    app.metrics = metrics
    app.page_fast_path = pages.PageFastPath(app.stack, app.state.pages)
    return app


def _freeze_heap() -> None:
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
    # which otherwise stall every socket for tens of milliseconds under load.
    gc.freeze()


def create_app_from_env() -> FastAPI:
    """Factory for `avatar-bff serve` (settings from the environment)."""
    return create_app(load_settings(), on_started=_freeze_heap)
