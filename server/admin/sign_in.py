"""Signing in and out of the admin console.

The sign-in form has no session yet, so its CSRF check is a pair: a random value in a signed, short-lived
cookie and the same value in a hidden field. Failed or not, every attempt costs a token from two buckets, one
per account and one per client address; when either is empty the answer is 429, with the same words whether
or not the account exists.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server import admins
from server.admin.console import (
    SESSION_COOKIE,
    SIGN_IN_PATH,
    cookie_secret,
    safe_next,
    secure_cookies,
    signed_in,
)
from server.dependencies import DbDep, SettingsDep, SignerDep, TemplatesDep
from server.errors import Forbidden, TooManyRequests
from server.security.headers import ADMIN_PREFIX
from server.security.signing import ADMIN_SESSION, SIGN_IN_FORM, TokenError
from server.settings import Settings
from server.shared_state import SharedState

router = APIRouter()
FORM_COOKIE = "abff_sign_in"
FORM_SECONDS = 3600
FAILURE_DELAY_SECONDS = 1.0  # a failed attempt answers this much later: guessing is slow as well as capped
WRONG = "The email or password is wrong."
THROTTLED = "Too many sign-in attempts. Wait a minute, then try again."


class SignInLimits:
    """Attempt buckets per account and per client address, shared by the instances: taking turns between
    them buys an attacker no extra attempts."""

    def __init__(self, shared: SharedState, settings: Settings) -> None:
        self.shared = shared
        self.refill = 1 / settings.sign_in_refill_seconds
        self.per_account = float(settings.sign_in_attempts_per_account)
        self.per_address = float(settings.sign_in_attempts_per_address)

    async def allow(self, email: str, address: str) -> bool:
        # Both buckets pay, so a run of guesses is stopped by whichever empties first.
        account = await self.shared.take(
            f"sign-in-account:{email.strip().lower()}", rate=self.refill, burst=self.per_account
        )
        by_address = await self.shared.take(
            f"sign-in-address:{address}", rate=self.refill, burst=self.per_address
        )
        return account == 0 and by_address == 0


def _limits(request: Request) -> SignInLimits:
    limits: SignInLimits = request.app.state.sign_in_limits  # built with the app (server.admin.install)
    return limits


def _form(
    request: Request,
    templates: TemplatesDep,
    signer: SignerDep,
    settings: Settings,
    *,
    email: str = "",
    error: str = "",
    back_to: str = ADMIN_PREFIX,
    status: int = 200,
) -> HTMLResponse:
    pair = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request,
        "admin/sign_in.html",
        {
            "nonce": request.scope["state"]["csp_nonce"],
            "form_token": pair,
            "email": email,
            "error": error,
            "next": back_to,
        },
        status_code=status,
    )
    response.set_cookie(
        FORM_COOKIE,
        signer.sign(SIGN_IN_FORM, {"n": pair}, FORM_SECONDS),
        max_age=FORM_SECONDS,
        path=ADMIN_PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request, settings),
    )
    return response


@router.get(SIGN_IN_PATH, response_class=HTMLResponse)
async def sign_in_form(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    signer: SignerDep,
    templates: TemplatesDep,
    next: str | None = None,
) -> Response:
    if await signed_in(request, db, settings, signer) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form(request, templates, signer, settings, back_to=safe_next(next))


@router.post(SIGN_IN_PATH, response_class=HTMLResponse)
async def sign_in(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    signer: SignerDep,
    templates: TemplatesDep,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=admins.MAX_PASSWORD_LENGTH)] = "",
    form_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = ADMIN_PREFIX,
) -> Response:
    try:
        expected = signer.verify(SIGN_IN_FORM, request.cookies.get(FORM_COOKIE, "")).get("n", "")
    except TokenError:
        expected = ""
    if not expected or not hmac.compare_digest(str(expected).encode(), form_token.encode()):
        raise Forbidden("csrf_failed", "The sign-in form has expired. Reload the page and try again.")
    back_to = safe_next(next)
    address = request.client.host if request.client else "unknown"
    if not await _limits(request).allow(email, address):
        raise TooManyRequests("sign_in_throttled", THROTTLED)
    admin_id = await admins.check_password(db, email, password)
    if admin_id is None:
        await asyncio.sleep(FAILURE_DELAY_SECONDS)
        return _form(
            request, templates, signer, settings, email=email, error=WRONG, back_to=back_to, status=401
        )
    # A new session every time: a session id planted in the browser before sign-in is ended, not promoted.
    secret = await admins.start_session(db, admin_id, replacing=cookie_secret(request, signer))
    response = RedirectResponse(back_to, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        signer.sign(ADMIN_SESSION, {"s": secret}, settings.admin_session_seconds),
        path=ADMIN_PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request, settings),
    )
    response.delete_cookie(FORM_COOKIE, path=ADMIN_PREFIX)
    return response


@router.post(f"{ADMIN_PREFIX}/sign-out")
async def sign_out(request: Request, db: DbDep, signer: SignerDep) -> Response:
    secret = cookie_secret(request, signer)
    if secret is not None:
        await admins.end_session(db, secret)
    response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=ADMIN_PREFIX)
    return response
