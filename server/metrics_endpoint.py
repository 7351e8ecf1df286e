"""`GET /metrics`: this instance's Prometheus metrics, for a scraper holding AVATAR_BFF_METRICS_TOKEN.

Off (404, like any unknown path) until the token is set. The token is kept only as its SHA-256 and a presented
one is hashed and compared in constant time, as API tokens are.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.errors import NotFound, Unauthenticated
from server.metrics import Metrics

router = APIRouter(include_in_schema=False)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    # async, so the scrape runs on the event loop like everything that updates the counts
    expected: bytes | None = request.app.state.metrics_token_digest
    if expected is None:
        raise NotFound("not_found", "Not Found")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated("missing_token", "send 'Authorization: Bearer <AVATAR_BFF_METRICS_TOKEN>'")
    if not hmac.compare_digest(token_digest(presented.strip()), expected):
        raise Unauthenticated("invalid_token", "this is not the metrics token")
    instance: Metrics = request.app.state.metrics
    return Response(generate_latest(instance.registry), media_type=CONTENT_TYPE_LATEST)
