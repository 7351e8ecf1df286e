"""Bearer-token authentication for the REST API (tokens from `avatar-bff create-token`)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.dependencies import get_db
from server.errors import ServiceError
from server.models import ApiToken, utcnow
from server.security.secrets_hashing import hash_api_token, token_prefix

LAST_USED_RESOLUTION = timedelta(minutes=1)  # avoid a write on every request


def require_scope(scope: str) -> Callable[..., Awaitable[ApiToken]]:
    """A dependency that admits requests carrying a live token with `scope`."""

    async def check(request: Request, db: Annotated[AsyncSession, Depends(get_db)]) -> ApiToken:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise ServiceError(401, "missing_token", "send 'Authorization: Bearer <token>'")
        prefix = token_prefix(presented.strip())
        token = None
        if prefix is not None:
            token = (await db.execute(select(ApiToken).where(ApiToken.prefix == prefix))).scalar_one_or_none()
        if token is None or not hmac.compare_digest(token.token_hash, hash_api_token(presented.strip())):
            raise ServiceError(401, "invalid_token", "the API token is not valid")
        if token.revoked_at is not None:
            raise ServiceError(401, "revoked_token", "the API token has been revoked")
        if scope not in token.scopes:
            raise ServiceError(403, "insufficient_scope", f"the API token lacks the {scope!r} scope")
        now = utcnow()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            token.last_used_at = now
            await db.commit()
        return token

    return check
