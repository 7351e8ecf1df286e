"""The Iframe SDK's one API request (sdk-assets), proxied with the session token swapped for the real ids."""

from __future__ import annotations

from urllib.parse import quote

import httpx
from fastapi import APIRouter, Response

from server.conversations import lifecycle as conversations
from server.dependencies import DbDep, SettingsDep, SignerDep, UpstreamHttpDep
from server.errors import Forbidden, NotFound, UpstreamFailed
from server.upstreams import endpoints_for, host_allowed, relay_allowed_hosts

router = APIRouter(prefix="/relay", include_in_schema=False)
MAX_ASSETS_BYTES = 256 * 1024


@router.get("/iframe/clients/{token}/flow/{slug}/sdk-assets")
async def sdk_assets(
    token: str, slug: str, db: DbDep, signer: SignerDep, settings: SettingsDep, http: UpstreamHttpDep
) -> Response:
    flow = (await conversations.check_page_token(db, signer, token, slug)).flow  # ended → 409
    if flow.sdk_mode != "iframe":
        # The answer names the real client and flow ids (talk_url): only the Iframe SDK needs it, and its
        # meeting iframe shows them anyway. A socket flow's page never asks, so its ids stay ours.
        raise NotFound("not_an_iframe_flow", "this avatar does not use the Iframe SDK")
    api = endpoints_for(flow.upstream, flow.custom_endpoints, settings.simulator_url).api
    url = f"{api}/clients/{quote(flow.client_id, safe='')}/flow/{quote(flow.flow_id, safe='')}/sdk-assets"
    if not host_allowed(url, relay_allowed_hosts(settings.allowed_upstream_hosts, settings.simulator_url)):
        raise Forbidden("upstream_not_allowed", "the flow's API host is not an allowed upstream")
    try:
        answer = await http.get(url, timeout=settings.relay_connect_timeout_seconds)
    except httpx.HTTPError as exc:
        raise UpstreamFailed(
            "upstream_unreachable", f"the avatar service is unreachable ({type(exc).__name__})"
        ) from None
    if answer.is_redirect or len(answer.content) > MAX_ASSETS_BYTES:
        raise UpstreamFailed("upstream_refused", "the avatar service gave an answer we do not pass on")
    return Response(answer.content, status_code=answer.status_code, media_type="application/json")


@router.post("/whep-unavailable/{rest:path}")
async def whep_unavailable(rest: str) -> Response:
    """Upstream gave this session no WHEP URL: a clear 404 makes the SDK fall back to audio."""
    raise NotFound("no_whep_url", "the avatar service gave this session no video URL")
