"""REST API tokens: created from the command line, presented as bearer tokens, stored only as hashes."""

from __future__ import annotations

import hmac
from datetime import timedelta

from sqlalchemy import select

from server.db import Database
from server.errors import Forbidden, Unauthenticated
from server.models import ApiToken, utcnow
from server.security.secrets_hashing import hash_api_token, new_api_token, token_prefix

SCOPES = ("transcripts:read", "transcripts:delete")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # a write at most once a minute per token, not on every request


async def create_token(db: Database, name: str, scopes: list[str]) -> str:
    """Store a new token; returns the secret, which is shown once and never stored."""
    new = new_api_token()
    async with db.transaction() as session:
        session.add(
            ApiToken(name=name, prefix=new.prefix, token_hash=new.token_hash, scopes=sorted(set(scopes)))
        )
    return new.token


async def authenticate(db: Database, presented: str, scope: str) -> ApiToken:
    """The live token `presented` names, if it carries `scope`; else a refusal naming the failed check."""
    prefix = token_prefix(presented)
    async with db.transaction() as session:
        token = None
        if prefix is not None:
            token = await session.scalar(select(ApiToken).where(ApiToken.prefix == prefix))
        if token is None or not hmac.compare_digest(token.token_hash, hash_api_token(presented)):
            raise Unauthenticated("invalid_token", "the API token is not valid")
        if token.revoked_at is not None:
            raise Unauthenticated("revoked_token", "the API token has been revoked")
        if scope not in token.scopes:
            raise Forbidden("insufficient_scope", f"the API token lacks the {scope!r} scope")
        now = utcnow()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            token.last_used_at = now
    return token
