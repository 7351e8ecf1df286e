"""ASGI middleware bounding what a request may carry: query string and body size, no NUL bytes."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message}).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimitsMiddleware:
    """Refuse oversized query strings (414) and bodies (413), and NUL bytes (400), before any handler runs."""

    def __init__(self, app: ASGIApp, max_query_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query_bytes:
            await _refuse(send, 414, "uri_too_long", f"the query string exceeds {self.max_query_bytes} bytes")
            return
        # No text column takes a NUL (PostgreSQL refuses it mid-query): say so here rather than as a 500.
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            await _refuse(send, 400, "nul_in_request", "the request path or query contains a NUL byte")
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _refuse(
                send, 413, "payload_too_large", f"the request body exceeds {self.max_body_bytes} bytes"
            )
            return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # chunked upload without a Content-Length
                    # Answer here: an exception would reach the handler's body parsing, which calls it a 400.
                    refused = True
                    if not started:
                        await _refuse(
                            send,
                            413,
                            "payload_too_large",
                            f"the request body exceeds {self.max_body_bytes} bytes",
                        )
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 was the answer; whatever the handler makes of the cut-off body is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:  # a handler failing on the cut-off body (client disconnect) was answered: 413
                raise
