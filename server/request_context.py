"""Which HTTP request and which conversation the code is working for, so log lines can say so.

Context variables follow a request's task (and the tasks and callbacks it starts); `server/logs.py` puts
them on every line. Neither is secret: a request id is ours or the proxy's correlation id, a conversation id
is the session id the API already lists.
"""

from __future__ import annotations

import itertools
import re
import secrets
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
conversation_id: ContextVar[str | None] = ContextVar("conversation_id", default=None)

REQUEST_ID_HEADER = b"x-request-id"
# A proxy's id (nginx's $request_id is 32 hex digits; others use UUIDs): short, and nothing a log could
# misread; no dot, so it can never carry one of our signed tokens. Anything else is replaced by our own.
_SANE = re.compile(rb"[A-Za-z0-9_:-]{8,64}")
_PREFIX = secrets.token_hex(4)  # per process: ids stay unique across instances without a random call each
_numbers = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}-{next(_numbers):x}"


def request_id_for(headers: list[tuple[bytes, bytes]]) -> str:
    """The proxy's X-Request-ID when it is sane, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode() if _SANE.fullmatch(value) else new_request_id()
    return new_request_id()
