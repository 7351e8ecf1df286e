"""Assembles the console's routers behind one guard and installs them in the app."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from server.admin import audit_log, budgets, conversations, flows, overview, sign_in, templates, tokens
from server.admin.console import SignInRequired, guard, sign_in_redirect
from server.settings import Settings
from server.shared_state import SharedState

router = APIRouter(dependencies=[Depends(guard)], include_in_schema=False)
for part in (sign_in, overview, flows, templates, tokens, audit_log, conversations, budgets):
    router.include_router(part.router)


def install(app: FastAPI, settings: Settings, shared: SharedState) -> None:
    app.state.sign_in_limits = sign_in.SignInLimits(shared, settings)
    app.include_router(router)

    async def to_sign_in(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return sign_in_redirect(exc.back_to)

    app.add_exception_handler(SignInRequired, to_sign_in)
