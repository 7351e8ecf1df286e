"""The typed refusal the core raises; the app maps it once to JSON `{"code", "message"}` with its status."""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
