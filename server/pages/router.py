"""GET /a/{slug}: render a flow's hosted page and hand it a signed token for a conversation yet to start."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from server.conversations.page_token import issue_page_token
from server.dependencies import DbDep, NonceDep, SettingsDep, SignerDep, TemplatesDep
from server.dpp.render import DppError, render_for_visitor
from server.errors import Invalid, Unavailable
from server.flows import page_flow
from server.pages.config import SOCKET_IO_CLIENT, build_page
from server.sdk import pin_for, script_source
from server.security.csp import build_csp, permissions_policy
from server.upstreams import endpoints_for

router = APIRouter()

VISITOR_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_VISITOR_FIELDS = 20
MAX_VISITOR_VALUE = 200


def visitor_context(query: dict[str, str]) -> dict[str, str]:
    """Query parameters become the visitor context the DPP template can use; bounded and named simply."""
    context = {key: value for key, value in query.items() if VISITOR_KEY.match(key)}
    if len(context) > MAX_VISITOR_FIELDS:
        raise Invalid("too_many_visitor_fields", f"too many visitor fields (at most {MAX_VISITOR_FIELDS})")
    for key, value in context.items():
        if len(value) > MAX_VISITOR_VALUE:
            raise Invalid(
                "visitor_field_too_long",
                f"visitor field {key!r} is longer than {MAX_VISITOR_VALUE} characters",
            )
    return context


def config_json(config: dict[str, Any]) -> Markup:
    """JSON safe to place inside <script type="application/json"> (no '</script>' breakout)."""
    text = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))  # noqa: S704


@router.get("/a/{slug}", response_class=HTMLResponse, include_in_schema=False)
async def hosted_page(
    slug: str,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    signer: SignerDep,
    templates: TemplatesDep,
    nonce: NonceDep,
) -> HTMLResponse:
    flow, version = await page_flow(db, slug)
    visitor = visitor_context(dict(request.query_params))
    page_url = str(request.url.remove_query_params(list(request.query_params)))
    dpp = None
    if version is not None:
        try:
            dpp = await render_for_visitor(
                version.body,
                visitor=visitor,
                flow_slug=flow.slug,
                flow_name=flow.display_name,
                page_url=page_url,
            )
        except DppError as exc:
            raise Unavailable(
                "dpp_failed", f"This avatar page is misconfigured: its prompt template failed ({exc})."
            ) from None
    # Nothing is written: the token names a conversation that starts on the first relayed connect or line.
    conversation_id, token = issue_page_token(
        signer,
        flow.slug,
        version.id if version else None,
        visitor,
        page_url,
        settings.session_token_ttl_seconds,
    )
    endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, settings.simulator_url)
    sdk = script_source(pin_for(flow.sdk_version, flow.sdk_mode), settings.sdk_dir)
    view = build_page(flow, endpoints, sdk, dpp, conversation_id, token)
    response = templates.TemplateResponse(
        request,
        view.template,
        {
            "config_json": config_json(view.config),
            "nonce": nonce,
            "flow": flow,
            "sdk": sdk,
            "socket_io": SOCKET_IO_CLIENT,
            "simulator": view.config["simulator"],
        },
    )
    response.headers["Content-Security-Policy"] = build_csp(nonce, view.policy)
    response.headers["Permissions-Policy"] = permissions_policy(view.policy.permission_delegates)
    response.headers["Cache-Control"] = "no-store"
    return response
