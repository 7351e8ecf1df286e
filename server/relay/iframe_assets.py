"""The Iframe SDK's one API request (sdk-assets), proxied with the session token swapped for the real ids."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from server.dependencies import Services, get_services
from server.errors import ServiceError
from server.models import Flow, Session
from server.security.signing import PAGE_SESSION, TokenError
from server.upstreams import endpoints_for, host_allowed, relay_allowed_hosts

router = APIRouter(prefix="/relay", include_in_schema=False)
MAX_ASSETS_BYTES = 256 * 1024


@router.get("/iframe/clients/{token}/flow/{slug}/sdk-assets")
async def sdk_assets(token: str, slug: str, services: Annotated[Services, Depends(get_services)]) -> Response:
    try:
        claims = services.signer.verify(PAGE_SESSION, token)
    except TokenError as exc:
        raise ServiceError(401, f"token_{exc.code}", f"session token refused: {exc}") from None
    if claims.get("flow") != slug:
        raise ServiceError(403, "wrong_flow", "this session token belongs to another flow")
    async with services.sessions() as db:
        flow = (
            await db.execute(
                select(Flow).join(Session, Session.flow_id == Flow.id).where(Session.id == claims.get("sid"))
            )
        ).scalar_one_or_none()
    if flow is None or not flow.enabled:
        raise ServiceError(404, "unknown_flow", "this avatar is no longer available")
    settings = services.settings
    api = endpoints_for(flow.upstream, flow.custom_endpoints, settings.simulator_url).api
    url = f"{api}/clients/{quote(flow.client_id, safe='')}/flow/{quote(flow.flow_id, safe='')}/sdk-assets"
    if not host_allowed(url, relay_allowed_hosts(settings.allowed_upstream_hosts, settings.simulator_url)):
        raise ServiceError(403, "upstream_not_allowed", "the flow's API host is not an allowed upstream")
    try:
        answer = await services.http.get(url, timeout=settings.relay_connect_timeout_seconds)
    except httpx.HTTPError as exc:
        raise ServiceError(
            502, "upstream_unreachable", f"the avatar service is unreachable ({type(exc).__name__})"
        ) from None
    if answer.is_redirect or len(answer.content) > MAX_ASSETS_BYTES:
        raise ServiceError(502, "upstream_refused", "the avatar service gave an answer we do not pass on")
    return Response(answer.content, status_code=answer.status_code, media_type="application/json")


@router.post("/whep-unavailable/{rest:path}")
async def whep_unavailable(rest: str) -> Response:
    """Upstream gave this session no WHEP URL: a clear 404 makes the SDK fall back to audio."""
    raise ServiceError(404, "no_whep_url", "the avatar service gave this session no video URL")
