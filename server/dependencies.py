"""What routes receive, as typed aliases: `async def route(db: DbDep, settings: SettingsDep) -> …`.

`create_app` puts each component on `app.state`; a route asks only for what it uses.
"""

from __future__ import annotations

from typing import Annotated, Protocol

import httpx
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from server.conversations.timeline import TimelineRecorder
from server.db import Database
from server.metrics import Metrics
from server.security.signing import Signer
from server.settings import Settings
from server.shared_state import SharedState


def page_base_url(scope: Scope, settings: Settings) -> str:
    """Where visitors reach us: AVATAR_BFF_PUBLIC_URL (required in production), else, in development, the
    address the server listens on. Never the Host header, which the client writes."""
    if settings.public_url:
        return settings.public_url
    host, port = scope.get("server") or ("127.0.0.1", 80)
    return f"{scope.get('scheme', 'http')}://{host}:{port}"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.signer
    return signer


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def _upstream_http(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.upstream_http
    return client


def _timeline(request: Request) -> TimelineRecorder:
    timeline: TimelineRecorder = request.app.state.timeline
    return timeline


def _shared(request: Request) -> SharedState:
    shared: SharedState = request.app.state.shared
    return shared


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


class ConversationEnder(Protocol):
    """The relay, as routes see it: ends conversations on whichever instance bridges them."""

    async def end_conversations(
        self,
        reason: str,
        *,
        conversation_id: str | None = None,
        flow_slug: str | None = None,
        every_flow: bool = False,
    ) -> None: ...


def _ender(request: Request) -> ConversationEnder:
    relay: ConversationEnder = request.app.state.relay
    return relay


def _csp_nonce(request: Request) -> str:
    nonce: str = request.scope["state"]["csp_nonce"]
    return nonce


SettingsDep = Annotated[Settings, Depends(_settings)]
DbDep = Annotated[Database, Depends(_db)]
SignerDep = Annotated[Signer, Depends(_signer)]
TemplatesDep = Annotated[Jinja2Templates, Depends(_templates)]
# Outbound calls to the upstream (WHEP, Iframe SDK assets); never follows redirects.
UpstreamHttpDep = Annotated[httpx.AsyncClient, Depends(_upstream_http)]
NonceDep = Annotated[str, Depends(_csp_nonce)]
# The diagnostics timeline's recorder (queued, written in batches).
TimelineDep = Annotated[TimelineRecorder, Depends(_timeline)]
# State the deployment's instances share (rate buckets, slots, counters): in process, or Redis.
SharedDep = Annotated[SharedState, Depends(_shared)]
# This instance's Prometheus metrics (GET /metrics).
MetricsDep = Annotated[Metrics, Depends(_metrics)]
# Ending live conversations (kill switches, an operator's end): the relay, reaching every instance.
EnderDep = Annotated[ConversationEnder, Depends(_ender)]
