"""GET /a/{slug}: render a flow's hosted page and hand it a signed token for a conversation yet to start."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from server.conversations.page_token import issue_page_token
from server.db import Database
from server.dependencies import page_base_url
from server.dpp.render import DppError, render_for_visitor
from server.errors import Invalid, Unavailable
from server.flows import SLUG as FLOW_SLUG
from server.flows import page_flow, preview_flow
from server.models import DppTemplateVersion, Flow
from server.pages.assets import StaticAssets
from server.pages.cache import (
    CONFIG_MARK,
    DPP_MARK,
    NONCE_MARK,
    SESSION_ID_MARK,
    TOKEN_MARK,
    Lru,
    PageKey,
    PageShell,
    TtlCache,
)
from server.pages.config import SOCKET_IO_CLIENT, build_page
from server.pages.rate_limit import PageViewLimiter
from server.sdk import ScriptSource, pin_for, script_source
from server.security.csp import baseline_headers, build_csp, new_nonce, permissions_policy
from server.security.signing import Signer
from server.settings import Settings
from server.shared_state import SharedState
from server.upstreams import endpoints_for

router = APIRouter()

VISITOR_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_VISITOR_FIELDS = 20
MAX_VISITOR_VALUE = 200
PAGE_CACHE_SIZE = 256  # flows and rendered pages kept per process
DPP_CACHE_SIZE = 1024  # rendered DPPs, of at most DPP_CACHE_MAX_CHARS each (4 MB in all)
DPP_CACHE_MAX_CHARS = 4096  # a DPP may render to 64 KB: the few that large are not kept
SLUG = re.compile(FLOW_SLUG)  # anything else is not a page
REFUSED = "avatar_page_refused"  # scope key: why the fast path handed a view over
BASELINE_HEADERS = {
    https: [(name.lower().encode(), value.encode()) for name, value in baseline_headers(https).items()]
    for https in (False, True)
}


def visitor_context(query: dict[str, str]) -> dict[str, str]:
    """Query parameters become the visitor context the DPP template can use; bounded and named simply."""
    context = {key: value for key, value in query.items() if VISITOR_KEY.match(key)}
    if len(context) > MAX_VISITOR_FIELDS:
        raise Invalid("too_many_visitor_fields", f"too many visitor fields (at most {MAX_VISITOR_FIELDS})")
    for key, value in context.items():
        if len(value) > MAX_VISITOR_VALUE:
            raise Invalid(
                "visitor_field_too_long",
                f"visitor field {key!r} is longer than {MAX_VISITOR_VALUE} characters",
            )
    return context


def config_json(config: dict[str, Any]) -> Markup:
    """JSON safe to place inside <script type="application/json"> (no '</script>' breakout)."""
    text = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))  # noqa: S704


@dataclass(frozen=True)
class LoadedPage:
    """What a view needs of its flow, read once per page_flow_cache_seconds: plain values, no ORM rows."""

    slug: str
    display_name: str
    template_version_id: int | None
    template_body: Any
    template_variables: list[dict[str, Any]] | None
    shell: PageShell


class HostedPages:
    """The per-process state of the page route: its caches and the per-address limiter."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        signer: Signer,
        templates: Jinja2Templates,
        assets: StaticAssets,
        shared: SharedState,
    ) -> None:
        self.settings, self.db, self.signer = settings, db, signer
        self.templates, self.assets = templates, assets
        self.flows: TtlCache[str, LoadedPage] = TtlCache(settings.page_flow_cache_seconds, PAGE_CACHE_SIZE)
        self.shells: Lru[PageKey, PageShell] = Lru(PAGE_CACHE_SIZE)
        self.dpps: Lru[tuple[object, ...], str] = Lru(DPP_CACHE_SIZE)
        self.limiter = PageViewLimiter(shared, settings.page_views_per_second, settings.page_views_burst)

    def loaded(self, flow: Flow, version: DppTemplateVersion | None) -> LoadedPage:
        sdk = script_source(pin_for(flow.sdk_version, flow.sdk_mode), self.settings.sdk_dir)
        return LoadedPage(
            flow.slug,
            flow.display_name,
            version.id if version else None,
            version.body if version else None,
            version.variables if version else None,
            self.shell(flow, version, sdk),
        )

    async def page(self, slug: str) -> LoadedPage:
        async def load() -> LoadedPage:
            return self.loaded(*await page_flow(self.db, slug))

        return await self.flows.get(slug, load)

    def shell(self, flow: Flow, version: DppTemplateVersion | None, sdk: ScriptSource) -> PageShell:
        """The page rendered once per flow version (a flow read again finds it here unless it changed)."""
        key = PageKey(flow.id, flow.updated_at, version.id if version else None, sdk.src)
        shell = self.shells.get(key)
        if shell is None:
            shell = self._render(flow, version, sdk)
            self.shells.put(key, shell)
        return shell

    def _render(self, flow: Flow, version: DppTemplateVersion | None, sdk: ScriptSource) -> PageShell:
        endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, self.settings.simulator_url)
        dpp_slot = {DPP_MARK: 0} if version is not None else None
        view = build_page(flow, endpoints, sdk, dpp_slot, SESSION_ID_MARK, TOKEN_MARK)
        config = dict(view.config)
        if config.get("libraries"):  # served from static/: the hashed URLs
            config["libraries"] = {name: self.assets.url(url) for name, url in config["libraries"].items()}
        html = self.templates.get_template(view.template).render(
            config_json=Markup(CONFIG_MARK),  # noqa: S704 - a fixed mark, replaced by config_json() text
            nonce=NONCE_MARK,
            flow=flow,
            sdk=sdk,
            socket_io=self.assets.url(SOCKET_IO_CLIENT),
            simulator=view.config["simulator"],
        )
        return PageShell.of(
            html=html,
            config=str(config_json(config)),
            csp=build_csp(NONCE_MARK, view.policy),
            permissions=permissions_policy(view.policy.permission_delegates, view.policy.autoplay_delegates),
        )

    async def dpp_json(self, page: LoadedPage, visitor: dict[str, str], page_url: str) -> str:
        """The DPP for these visitor values, as config JSON. Kept in an LRU too: most views carry the same
        values (none at all, often), and rendering costs more than the rest of a view."""
        key = (
            page.template_version_id,
            page.slug,
            page.display_name,
            page_url,
            tuple(sorted(visitor.items())),
        )
        cached = self.dpps.get(key)
        if cached is not None:
            return cached
        try:
            dpp = await render_for_visitor(
                page.template_body,
                visitor=visitor,
                flow_slug=page.slug,
                flow_name=page.display_name,
                page_url=page_url,
                variables=page.template_variables,
            )
        except DppError as exc:
            raise Unavailable(
                "dpp_failed", f"This avatar page is misconfigured: its prompt template failed ({exc})."
            ) from None
        rendered = str(config_json(dpp))
        if len(rendered) <= DPP_CACHE_MAX_CHARS:
            self.dpps.put(key, rendered)
        return rendered

    async def view(self, scope: Scope, slug: str, nonce: str) -> tuple[str, dict[str, str]]:
        """One page view: its HTML and the headers that are its own (CSP, permissions, caching)."""
        client = scope.get("client")
        await self.limiter.check(client[0] if client else "unknown")
        return await self._view(scope, await self.page(slug), nonce, preview=False)

    def page_url(self, scope: Scope, slug: str) -> str:
        """The address visitors open a flow's page at (what templates see as `flow.url`)."""
        return f"{page_base_url(scope, self.settings)}/a/{slug}"

    async def preview_view(
        self, scope: Scope, slug: str, version_id: int, nonce: str
    ) -> tuple[str, dict[str, str]]:
        """A flow's page with an explicit template version (an admin's preview link): not cached, and the
        conversation it starts is marked as a preview."""
        page = self.loaded(*await preview_flow(self.db, slug, version_id))
        return await self._view(scope, page, nonce, preview=True)

    async def _view(
        self, scope: Scope, page: LoadedPage, nonce: str, preview: bool
    ) -> tuple[str, dict[str, str]]:
        settings = self.settings
        query = scope.get("query_string", b"")
        visitor = visitor_context(dict(QueryParams(query))) if query else {}
        page_url = self.page_url(scope, page.slug)
        dpp_json = None
        if page.template_version_id is not None and page.shell.has_dpp:
            dpp_json = await self.dpp_json(page, visitor, page_url)
        # Nothing is written: the token names a conversation that starts on the first relayed connect or line.
        conversation_id, token = issue_page_token(
            self.signer,
            page.slug,
            page.template_version_id,
            visitor,
            page_url,
            settings.session_token_ttl_seconds,
            preview=preview,
        )
        shell = page.shell
        html, csp = shell.fill(nonce, conversation_id, token, dpp_json)
        return html, {
            "content-security-policy": csp,
            "permissions-policy": shell.permissions,
            "cache-control": "no-store",
        }


@router.get("/a/{slug}", response_class=HTMLResponse, include_in_schema=False)
async def hosted_page(slug: str, request: Request) -> HTMLResponse:
    """The page through the whole stack: what PageFastPath hands over (its refusals, other requests)."""
    refused = request.scope.get(REFUSED)
    if isinstance(refused, Exception):
        raise refused  # the fast path's refusal, answered the usual way without counting the view twice
    pages: HostedPages = request.app.state.pages
    html, headers = await pages.view(request.scope, slug, request.scope["state"]["csp_nonce"])
    return HTMLResponse(html, headers=headers)


class PageFastPath:
    """Page views (GET /a/<slug>) ahead of the framework's stack, which costs several times the page itself.

    It answers only what it fully handles: a page served, with the headers SecurityHeadersMiddleware would
    add. Anything else (a refusal, an odd request) goes to `app`, the whole stack; a refusal travels in the
    scope so the route raises it there and the error handlers answer it as they answer every other.
    """

    def __init__(self, app: ASGIApp, pages: HostedPages) -> None:
        self.app, self.pages, self.max_query_bytes = app, pages, pages.settings.max_query_bytes

    def handles(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and REFUSED not in scope  # handed over already: the stack answers it
            and scope["method"] == "GET"
            and scope["path"].startswith("/a/")
            and SLUG.fullmatch(scope["path"][3:]) is not None
            and len(scope.get("query_string", b"")) <= self.max_query_bytes
            and b"%00" not in scope.get("query_string", b"")  # RequestLimitsMiddleware refuses it
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        nonce = new_nonce()
        try:
            html, own = await self.pages.view(scope, scope["path"][3:], nonce)
        except Exception as exc:  # handed over whole, raised again by the route
            scope[REFUSED] = exc
            await self.app(scope, receive, send)
            return
        body = html.encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *((name.encode(), value.encode()) for name, value in own.items()),
            *BASELINE_HEADERS[scope.get("scheme") == "https"],
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
