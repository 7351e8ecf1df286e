"""REST API tokens: created from the command line or the console, presented as bearer tokens, stored only as
hashes. Creating and revoking one is audited."""

from __future__ import annotations

import hmac
from datetime import timedelta

from sqlalchemy import select

from server import audit
from server.db import Database
from server.errors import Forbidden, InvalidField, NotFound, Unauthenticated
from server.models import ApiToken, utcnow
from server.security.secrets_hashing import hash_api_token, new_api_token, token_prefix

SCOPES = ("transcripts:read", "transcripts:delete", "budgets:read")
MAX_NAME = 120
LAST_USED_RESOLUTION = timedelta(minutes=1)  # a write at most once a minute per token, not on every request


def _described(token: ApiToken) -> dict[str, object]:
    """A token as the audit log records it: never its secret or hash."""
    revoked = token.revoked_at.isoformat() if token.revoked_at else None
    return {"name": token.name, "prefix": token.prefix, "scopes": token.scopes, "revoked_at": revoked}


def _checked(name: str, scopes: list[str]) -> tuple[str, list[str]]:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        message = f"Give the token a name of 1 to {MAX_NAME} characters."
        raise InvalidField("name", "invalid_token_name", message)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidField("scopes", "unknown_scope", f"Unknown scope: {', '.join(unknown)}.")
    if not scopes:
        raise InvalidField("scopes", "no_scope", "Choose at least one scope.")
    return name, sorted(set(scopes))


async def create_token(db: Database, name: str, scopes: list[str], actor: str = "command line") -> str:
    """Store a new token; returns the secret, which is shown once and never stored."""
    name, scopes = _checked(name, scopes)
    new = new_api_token()
    async with db.transaction() as session:
        token = ApiToken(name=name, prefix=new.prefix, token_hash=new.token_hash, scopes=scopes)
        session.add(token)
        audit.record(session, actor, "create", "token", name, None, _described(token))
    return new.token


async def list_tokens(db: Database) -> list[ApiToken]:
    """Every token, newest first (revoked ones too: their names explain the audit log)."""
    async with db.reading() as session:
        return list((await session.execute(select(ApiToken).order_by(ApiToken.id.desc()))).scalars())


async def revoke_token(db: Database, token_id: int, actor: str) -> None:
    """Revoke it from now on; revoking a revoked token changes nothing."""
    async with db.transaction() as session:
        token = await session.get(ApiToken, token_id)
        if token is None:
            raise NotFound("unknown_token", "There is no such API token.")
        if token.revoked_at is not None:
            return
        before = _described(token)
        token.revoked_at = utcnow()
        audit.record(session, actor, "revoke", "token", token.name, before, _described(token))


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
