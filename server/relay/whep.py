"""WHEP through our origin: the browser posts its SDP offer here; we forward it to the URL upstream handed
to that session. Targets travel as signed opaque ids, so any instance can serve them and nobody can point
the proxy anywhere else (no open proxy, no SSRF)."""

from __future__ import annotations

import time
from urllib.parse import urljoin

import httpx
from fastapi import APIRouter, Request, Response

from server.conversations import lifecycle as conversations
from server.db import Database
from server.dependencies import DbDep, MetricsDep, SettingsDep, SignerDep, TimelineDep, UpstreamHttpDep
from server.errors import (
    AppError,
    Forbidden,
    NotFound,
    TooLarge,
    UnsupportedMediaType,
    UpstreamFailed,
    UpstreamTimeout,
)
from server.metrics import Metrics, status_class
from server.security.signing import WHEP_RESOURCE, WHEP_TARGET, Signer, TokenError
from server.settings import Settings
from server.upstreams import host_allowed, relay_allowed_hosts

router = APIRouter(prefix="/relay/whep", include_in_schema=False)
MAX_SDP_BYTES = 64 * 1024
TARGET_TTL_SECONDS = 4 * 3600  # a conversation renegotiates on the same URL for as long as it lasts
PASSED_HEADERS = ("content-type", "etag", "link")


def whep_proxy_path(signer: Signer, upstream_url: str, conversation_id: str) -> str:
    token = signer.sign(WHEP_TARGET, {"u": upstream_url, "s": conversation_id}, TARGET_TTL_SECONDS)
    return f"/relay/whep/{token}"


async def _target(db: Database, settings: Settings, signer: Signer, kind: str, token: str) -> tuple[str, str]:
    """The upstream URL and conversation a signed id names; refused once that conversation is over."""
    url, conversation_id = _claims(signer, kind, token)
    await _check(db, settings, url, conversation_id)
    return url, conversation_id


def _claims(signer: Signer, kind: str, token: str) -> tuple[str, str]:
    try:
        claims = signer.verify(kind, token)
    except TokenError as exc:
        raise NotFound("unknown_whep_target", f"no WHEP session here ({exc})") from None
    url, conversation_id = claims.get("u"), claims.get("s")
    if not isinstance(url, str) or not isinstance(conversation_id, str):
        raise NotFound("unknown_whep_target", "no WHEP session here (not a WHEP id)")
    return url, conversation_id


async def _check(db: Database, settings: Settings, url: str, conversation_id: str) -> None:
    try:
        allowed = host_allowed(
            url, relay_allowed_hosts(settings.allowed_upstream_hosts, settings.simulator_url)
        )
    except ValueError:  # upstream handed out an address no request can go to (`host:1:2`)
        raise Forbidden(
            "whep_url_invalid", "the avatar service gave a WHEP address that is not a valid URL"
        ) from None
    if not allowed:
        raise Forbidden("whep_host_not_allowed", "the upstream WHEP host is not an allowed upstream")
    # The id outlives the signaling socket: it is worth something only while its conversation is active.
    await conversations.require_active(db, conversation_id)


async def _forward(
    http: httpx.AsyncClient,
    metrics: Metrics,
    settings: Settings,
    signer: Signer,
    method: str,
    url: str,
    conversation_id: str,
    body: bytes,
    content_type: str | None,
) -> Response:
    headers = {"content-type": content_type} if content_type else {}
    started = time.monotonic()
    outcome = "error"
    try:
        answer = await http.request(
            method, url, content=body, headers=headers, timeout=settings.whep_timeout_seconds
        )
        outcome = status_class(answer.status_code)
    except httpx.TimeoutException:
        outcome = "timeout"
        raise UpstreamTimeout(
            "whep_timeout",
            f"the avatar video service did not answer within {settings.whep_timeout_seconds:g} s",
        ) from None
    except httpx.HTTPError as exc:
        raise UpstreamFailed(
            "whep_unreachable", f"the avatar video service is unreachable ({type(exc).__name__})"
        ) from None
    finally:
        metrics.whep(method, outcome, time.monotonic() - started)
    if answer.is_redirect:
        raise UpstreamFailed("whep_redirect_refused", "the avatar video service redirected; not followed")
    response = Response(answer.content, status_code=answer.status_code)
    for name in PASSED_HEADERS:
        if name in answer.headers:
            response.headers[name] = answer.headers[name]
    if location := answer.headers.get("location"):
        resource = urljoin(url, location)
        response.headers["location"] = "/relay/whep/resource/" + signer.sign(
            WHEP_RESOURCE, {"u": resource, "s": conversation_id}, TARGET_TTL_SECONDS
        )
    return response


async def _sdp_body(request: Request) -> bytes:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/sdp":
        raise UnsupportedMediaType("unsupported_media_type", "send the offer as application/sdp")
    body = await request.body()
    if len(body) > MAX_SDP_BYTES:
        raise TooLarge("offer_too_large", f"the SDP offer exceeds {MAX_SDP_BYTES // 1024} KB")
    return body


@router.post("/{target}")
async def post_offer(
    target: str,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    signer: SignerDep,
    http: UpstreamHttpDep,
    timeline: TimelineDep,
    metrics: MetricsDep,
) -> Response:
    url, conversation_id = _claims(signer, WHEP_TARGET, target)
    started = time.monotonic()
    try:  # on the conversation's diagnostics timeline, refused or answered
        await _check(db, settings, url, conversation_id)
        body = await _sdp_body(request)
        answer = await _forward(
            http, metrics, settings, signer, "POST", url, conversation_id, body, "application/sdp"
        )
    except AppError as exc:
        timeline.note(
            conversation_id, "whep_failed", status=exc.status, error=exc.code, latency_ms=_ms(started)
        )
        raise
    kind = "whep" if answer.status_code < 400 else "whep_failed"
    timeline.note(conversation_id, kind, status=answer.status_code, latency_ms=_ms(started))
    return answer


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


@router.patch("/resource/{resource}")
async def patch_resource(
    resource: str,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    signer: SignerDep,
    http: UpstreamHttpDep,
    metrics: MetricsDep,
) -> Response:
    url, conversation_id = await _target(db, settings, signer, WHEP_RESOURCE, resource)
    body = await request.body()
    if len(body) > MAX_SDP_BYTES:
        raise TooLarge("payload_too_large", f"the request exceeds {MAX_SDP_BYTES // 1024} KB")
    content_type = request.headers.get("content-type")
    return await _forward(http, metrics, settings, signer, "PATCH", url, conversation_id, body, content_type)


@router.delete("/resource/{resource}")
async def delete_resource(
    resource: str,
    db: DbDep,
    settings: SettingsDep,
    signer: SignerDep,
    http: UpstreamHttpDep,
    metrics: MetricsDep,
) -> Response:
    url, conversation_id = await _target(db, settings, signer, WHEP_RESOURCE, resource)
    return await _forward(http, metrics, settings, signer, "DELETE", url, conversation_id, b"", None)
