"""A deadline for request headers, which uvicorn does not have.

uvicorn's `timeout_keep_alive` only runs between requests, and any byte received cancels it: a client that
opens a connection and trickles its headers (or sends nothing) holds it for ever. This protocol gives every
request's head HEADER_TIMEOUT_SECONDS from its first byte (or from the connection, for the first request)
and closes the connection when the headers are not complete by then. Bodies and WebSockets are not limited.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = 10.0
# What `avatar-bff serve` passes as uvicorn's `http` option (a string, so worker processes import it too).
HTTP_PROTOCOL = "server.security.slow_clients:HeaderDeadlineProtocol"


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout = HEADER_TIMEOUT_SECONDS
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_deadline()  # a keep-alive connection's next request: its own deadline

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _start_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
