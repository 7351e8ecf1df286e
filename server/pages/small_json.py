"""The body of a page's small JSON post (a diagnostics report, a budget question), read within a size bound.

These posts are read by hand rather than by FastAPI's body parsing: the size is checked as the bytes arrive,
before any parsing, and every refusal is one of our errors, named for what the page sent.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from server.errors import Invalid, TooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


async def read_small_json(request: Request, model: type[M], max_bytes: int, noun: str) -> M:
    """`model` from the request's JSON body: 415 for another media type, 413 past `max_bytes` (the rest is
    not read), 400 naming the first invalid part. Error codes are `<noun>_too_large` and `invalid_<noun>`."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("unsupported_media_type", f"send the {noun} as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"{noun}_too_large", f"a {noun} may have at most {max_bytes} bytes")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(f"invalid_{noun}", f"{where}: {first['msg']}") from None
