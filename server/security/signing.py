"""Signed, expiring tokens (HMAC-SHA256). One module signs and verifies every token kind."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

# Token kinds: a token signed for one purpose never verifies for another.
PAGE_SESSION = "page-session"
WHEP_TARGET = "whep-target"  # an upstream WHEP URL handed to one session
WHEP_RESOURCE = "whep-resource"  # the session resource (Location) an upstream WHEP answer named
ADMIN_SESSION = "admin-session"  # the admin console's session cookie
SIGN_IN_FORM = "sign-in-form"  # the sign-in form's CSRF pair (cookie + hidden field)
ADMIN_PREVIEW = "admin-preview"  # a console link to a flow's page with an unpublished template version


class TokenError(Exception):
    """A token was refused; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url, refusing every spelling but the one `_b64` writes (one token, one form)."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # unused low bits set, or a length no encoder produces
        raise ValueError("not canonical base64url")
    return data


class Signer:
    """Signs JSON payloads for one purpose ('kind'); a token of one kind never verifies as another."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _key(self, kind: str) -> bytes:
        return hmac.new(self._secret, f"avatar-bff:{kind}".encode(), hashlib.sha256).digest()

    def sign(self, kind: str, payload: dict[str, Any], ttl_seconds: int, now: float | None = None) -> str:
        issued = time.time() if now is None else now
        body = _b64(
            json.dumps(
                {**payload, "exp": int(issued + ttl_seconds)}, separators=(",", ":"), ensure_ascii=False
            ).encode()
        )
        mac = hmac.new(self._key(kind), body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def verify(self, kind: str, token: str, now: float | None = None) -> dict[str, Any]:
        """Return the payload, or raise TokenError('invalid'|'expired')."""
        body, _, mac = token.partition(".")
        if not body or not mac or "." in mac or len(token) > 4096:
            raise TokenError("invalid", "the token is malformed")
        try:
            expected = hmac.new(self._key(kind), body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                raise TokenError("invalid", "the token signature does not match")
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeError) as exc:
            raise TokenError("invalid", "the token is malformed") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            raise TokenError("invalid", "the token is malformed")
        if payload["exp"] < (time.time() if now is None else now):
            raise TokenError("expired", "the token has expired")
        return payload
