"""What every admin console route shares: who is signed in, the CSRF and role checks, and page rendering.

The checks run as a dependency of the whole console router (`guard`), so a new route cannot skip them:
every request but the sign-in form's needs a live session; every method but GET and HEAD needs the
session's CSRF token; and only the `admin` role may use them, except the few read-only POSTs listed here.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from server import admins
from server.admins import SignedIn
from server.db import Database
from server.dependencies import DbDep, SettingsDep, SignerDep, TemplatesDep
from server.errors import Forbidden, Unauthenticated
from server.security.headers import ADMIN_PREFIX
from server.security.signing import ADMIN_SESSION, Signer, TokenError
from server.settings import Settings

SESSION_COOKIE = "abff_admin"
SAFE_METHODS = frozenset({"GET", "HEAD"})
SIGN_IN_PATH = f"{ADMIN_PREFIX}/sign-in"
PUBLIC_PATHS = frozenset({SIGN_IN_PATH})  # checks its own CSRF pair: there is no session yet
# POSTs that change nothing stored (a viewer may use them; the CSRF token is still required).
READ_ONLY_POSTS: set[str] = {f"{ADMIN_PREFIX}/sign-out"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    """A browser asked for a console page without a live session: it is sent to the sign-in form."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def read_only_post(path: str) -> str:
    """Mark a POST route as changing nothing, so viewers may use it; returns the path."""
    READ_ONLY_POSTS.add(path)
    return path


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path of ours, never another site."""
    if value and value.startswith(f"{ADMIN_PREFIX}") and not value.startswith("//") and "\\" not in value:
        return value
    return ADMIN_PREFIX


def cookie_secret(request: Request, signer: Signer) -> str | None:
    """The session secret the browser's signed cookie carries, if the signature holds."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        secret = signer.verify(ADMIN_SESSION, cookie).get("s")
    except TokenError:
        return None
    return secret if isinstance(secret, str) else None


def secure_cookies(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


async def signed_in(request: Request, db: Database, settings: Settings, signer: Signer) -> SignedIn | None:
    secret = cookie_secret(request, signer)
    if secret is None:
        return None
    return await admins.session_of(db, secret, settings.admin_idle, settings.admin_lifetime)


async def guard(request: Request, db: DbDep, settings: SettingsDep, signer: SignerDep) -> None:
    path = request.url.path
    if path in PUBLIC_PATHS:
        return
    admin = await signed_in(request, db, settings, signer)
    if admin is None:
        if request.method in SAFE_METHODS:
            query = f"?{request.url.query}" if request.url.query else ""
            raise SignInRequired(path + query)
        raise Unauthenticated("signed_out", "Your session has ended: sign in again.")
    request.state.admin = admin
    if request.method in SAFE_METHODS:
        return
    presented: object = request.headers.get(CSRF_HEADER)
    if presented is None:
        presented = (await request.form()).get(CSRF_FIELD)  # Starlette keeps the parsed form for the route
    if not isinstance(presented, str) or not hmac.compare_digest(
        presented.encode(), admin.csrf_token.encode()
    ):
        raise Forbidden(
            "csrf_failed", "This form has expired or came from another page. Reload the page and try again."
        )
    if not admin.can_change and path not in READ_ONLY_POSTS:
        raise Forbidden("read_only", "Your account can look but not change anything (role: viewer).")


class Console:
    """One console request's tools: the database, settings, the admin, and page rendering."""

    def __init__(
        self, request: Request, db: Database, settings: Settings, templates: Jinja2Templates
    ) -> None:
        self.request, self.db, self.settings, self.templates = request, db, settings, templates
        self.admin: SignedIn = request.state.admin

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        values = {
            "admin": self.admin,
            "csrf_token": self.admin.csrf_token,
            "nonce": self.request.scope["state"]["csp_nonce"],
            **context,
        }
        return self.templates.TemplateResponse(self.request, f"admin/{name}", values, status_code=status)

    def redirect(self, path: str) -> Response:
        """After a change: back to a page (303, so a reload does not post again)."""
        return RedirectResponse(path, status_code=303)

    def require_admin(self) -> None:
        """For GET pages that only make sense to someone who may change things (the forms)."""
        if not self.admin.can_change:
            raise Forbidden("read_only", "Your account can look but not change anything (role: viewer).")


def _console(request: Request, db: DbDep, settings: SettingsDep, templates: TemplatesDep) -> Console:
    return Console(request, db, settings, templates)


ConsoleDep = Annotated[Console, Depends(_console)]


def sign_in_redirect(back_to: str) -> Response:
    return RedirectResponse(f"{SIGN_IN_PATH}?next={quote(safe_next(back_to), safe='/')}", status_code=303)
