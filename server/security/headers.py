"""ASGI middleware: a nonce per request and security headers on every response."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.security.csp import PagePolicy, baseline_headers, build_csp, new_nonce, permissions_policy

ADMIN_PREFIX = "/admin"


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        console = scope["path"] == ADMIN_PREFIX or scope["path"].startswith(f"{ADMIN_PREFIX}/")
        nonce = new_nonce()
        scope.setdefault("state", {})["csp_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in baseline_headers(https).items():
                    headers.setdefault(name, value)
                if console:  # the admin console: never framed, never cached (it shows secrets and PII)
                    headers["Cache-Control"] = "no-store"
                if headers.get("content-type", "").startswith("text/html"):
                    # Pages set their own policy; any other HTML (errors, docs) gets the strictest one.
                    policy = PagePolicy(frame_ancestors=("'none'",)) if console else PagePolicy()
                    headers.setdefault("Content-Security-Policy", build_csp(nonce, policy))
                    headers.setdefault("Permissions-Policy", permissions_policy())
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
