"""The one error vocabulary: services, pages and the relay raise these; each edge maps them once.

Framework-free on purpose: the core says *what* went wrong (a stable `code`, a sentence a person understands,
and the HTTP status it corresponds to); the app turns it into JSON or the HTML error page, the relay into a
Socket.IO refusal.
"""

from __future__ import annotations

from typing import ClassVar


class AppError(Exception):
    status: ClassVar[int] = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invalid(AppError):
    """The request is malformed or breaks a rule the caller can fix."""

    status = 400


class InvalidField(Invalid):
    """One field of a form breaks a rule; `field` names it, so the form shows the message beside it."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(code, message)
        self.field = field


class Unauthenticated(AppError):
    """No credential, or one that is not valid (a token refused, expired or revoked)."""

    status = 401


class Forbidden(AppError):
    status = 403


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    """The request is valid but the resource's state does not allow it (an ended conversation)."""

    status = 409


class TooLarge(AppError):
    status = 413


class TooManyRequests(AppError):
    """The caller is over a rate limit; the message says how long to wait."""

    status = 429


class UnsupportedMediaType(AppError):
    status = 415


class UpstreamFailed(AppError):
    """The avatar service answered badly or not at all."""

    status = 502


class Unavailable(AppError):
    """We cannot serve this right now (misconfiguration, capacity)."""

    status = 503


class UpstreamTimeout(AppError):
    status = 504
