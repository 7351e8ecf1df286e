"""The signed token a hosted page gives the SDK: it names a conversation that does not exist yet.

A page view writes nothing; the token carries what starting the conversation needs (the flow, the template
version the page rendered, the visitor's values and the page URL), so the row is written on the first relayed
connect or transcript line, on whichever instance receives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.errors import Invalid, Unauthenticated
from server.models import new_id
from server.security.signing import PAGE_SESSION, Signer, TokenError

# The token rides in the Socket.IO query string and a URL path: keep it well under the 4 KB a token may have.
MAX_VISITOR_BYTES = 2048


@dataclass(frozen=True)
class PageClaims:
    conversation_id: str
    flow_slug: str
    template_version_id: int | None
    visitor: dict[str, str]
    page_url: str
    preview: bool = False  # opened from an admin's preview link: kept out of the flow's statistics


def issue_page_token(
    signer: Signer,
    flow_slug: str,
    template_version_id: int | None,
    visitor: dict[str, str],
    page_url: str,
    ttl_seconds: int,
    preview: bool = False,
) -> tuple[str, str]:
    """A fresh conversation id and the token that lets a page start it."""
    if len(json.dumps(visitor, ensure_ascii=False).encode()) > MAX_VISITOR_BYTES:
        raise Invalid("visitor_too_large", f"the visitor values exceed {MAX_VISITOR_BYTES} bytes in all")
    conversation_id = new_id()
    claims = {"sid": conversation_id, "flow": flow_slug, "v": template_version_id, "ctx": visitor}
    if preview:
        claims["pv"] = True
    return conversation_id, signer.sign(PAGE_SESSION, {**claims, "url": page_url[:512]}, ttl_seconds)


def read_page_token(signer: Signer, token: str) -> PageClaims:
    """The claims of a page token, or Unauthenticated naming why it was refused."""
    try:
        claims = signer.verify(PAGE_SESSION, token)
    except TokenError as exc:
        raise Unauthenticated(
            f"token_{exc.code}", f"This page's session is not valid ({exc}). Reload the page."
        ) from None
    conversation_id, flow, version = claims.get("sid"), claims.get("flow"), claims.get("v")
    visitor, url = claims.get("ctx", {}), claims.get("url", "")
    if not (
        isinstance(conversation_id, str)
        and isinstance(flow, str)
        and (version is None or isinstance(version, int))
        and isinstance(visitor, dict)
        and isinstance(url, str)
    ):
        raise Unauthenticated(
            "token_invalid", "This page's session is not valid (not a page token). Reload the page."
        )
    visitor_values = {str(k): str(v) for k, v in visitor.items()}
    return PageClaims(conversation_id, flow, version, visitor_values, url, claims.get("pv") is True)
