"""API tokens in the console: the list, a form to create one (its secret shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from server import api_tokens
from server.admin.console import Console, ConsoleDep
from server.errors import InvalidField
from server.security.headers import ADMIN_PREFIX

router = APIRouter()
TOKENS = f"{ADMIN_PREFIX}/tokens"
DONE = {"revoked": "Token revoked: it no longer opens the API."}


async def _page(
    console: Console,
    *,
    name: str = "",
    scopes: list[str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return console.render(
        "tokens.html",
        status=status,
        section="tokens",
        tokens=await api_tokens.list_tokens(console.db),
        scopes=api_tokens.SCOPES,
        token_name=name,
        chosen=scopes if scopes is not None else ["transcripts:read"],
        errors=errors or {},
        flash=DONE.get(console.request.query_params.get("done", "")),
    )


@router.get(TOKENS, response_class=HTMLResponse)
async def token_list(console: ConsoleDep) -> HTMLResponse:
    return await _page(console)


@router.post(TOKENS, response_class=HTMLResponse)
async def create_token(console: ConsoleDep) -> HTMLResponse:
    form = await console.request.form()
    name = str(form.get("name") or "")
    scopes = [str(scope) for scope in form.getlist("scopes")]
    try:
        secret = await api_tokens.create_token(console.db, name, scopes, actor=console.admin.email)
    except InvalidField as exc:
        return await _page(console, name=name, scopes=scopes, errors={exc.field: exc.message}, status=400)
    # The secret exists only in this response (never stored, never logged): no redirect can show it again.
    return console.render(
        "token_created.html",
        status=201,
        section="tokens",
        token_name=name.strip(),
        token=secret,
        scopes=sorted(set(scopes)),
    )


@router.post(f"{TOKENS}/{{token_id}}/revoke")
async def revoke_token(token_id: int, console: ConsoleDep) -> Response:
    await api_tokens.revoke_token(console.db, token_id, console.admin.email)
    return console.redirect(f"{TOKENS}?done=revoked")
