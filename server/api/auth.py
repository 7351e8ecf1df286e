"""Bearer-token authentication for the REST API (tokens from `avatar-bff create-token`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from server import api_tokens
from server.dependencies import DbDep
from server.errors import Unauthenticated
from server.models import ApiToken


def require_scope(scope: str) -> Callable[..., Awaitable[ApiToken]]:
    """A dependency that admits requests carrying a live token with `scope`."""

    async def check(request: Request, db: DbDep) -> ApiToken:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated("missing_token", "send 'Authorization: Bearer <token>'")
        return await api_tokens.authenticate(db, presented.strip(), scope)

    return check
