"""GET /a/{slug}: render a flow's hosted page, open a Session, and hand the page a signed session token."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.dependencies import Services, csp_nonce, get_db, get_services
from server.dpp.render import DppError, render_dpp
from server.flows import latest_version
from server.models import Flow, Session
from server.pages.config import SOCKET_IO_CLIENT, build_page
from server.sdk import pin_for, script_source
from server.security.csp import build_csp, permissions_policy
from server.security.signing import PAGE_SESSION
from server.upstreams import endpoints_for

router = APIRouter()

VISITOR_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_VISITOR_FIELDS = 20
MAX_VISITOR_VALUE = 200


def visitor_context(query: dict[str, str]) -> dict[str, str]:
    """Query parameters become the visitor context the DPP template can use; bounded and named simply."""
    context = {key: value for key, value in query.items() if VISITOR_KEY.match(key)}
    if len(context) > MAX_VISITOR_FIELDS:
        raise HTTPException(400, f"too many visitor fields (at most {MAX_VISITOR_FIELDS})")
    for key, value in context.items():
        if len(value) > MAX_VISITOR_VALUE:
            raise HTTPException(400, f"visitor field {key!r} is longer than {MAX_VISITOR_VALUE} characters")
    return context


def config_json(config: dict[str, Any]) -> Markup:
    """JSON safe to place inside <script type="application/json"> (no '</script>' breakout)."""
    text = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))  # noqa: S704


@router.get("/a/{slug}", response_class=HTMLResponse, include_in_schema=False)
async def hosted_page(
    slug: str,
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    db: Annotated[AsyncSession, Depends(get_db)],
) -> HTMLResponse:
    flow = (await db.execute(select(Flow).where(Flow.slug == slug, Flow.enabled))).scalar_one_or_none()
    if flow is None:
        raise HTTPException(404, "There is no avatar page at this address.")
    settings = services.settings
    visitor = visitor_context(dict(request.query_params))
    version = await latest_version(db, flow.dpp_template_id) if flow.dpp_template_id else None
    dpp = None
    if version is not None:
        context = {
            "visitor": visitor,
            "flow": {
                "slug": flow.slug,
                "display_name": flow.display_name,
                "url": str(request.url.remove_query_params(list(request.query_params))),
            },
        }
        try:
            dpp = render_dpp(version.body, context)
        except DppError as exc:
            raise HTTPException(
                503, f"This avatar page is misconfigured: its prompt template failed ({exc})."
            ) from None
    session = Session(
        flow_id=flow.id,
        template_version_id=version.id if version else None,
        rendered_dpp=dpp,
        visitor_context=visitor,
    )
    db.add(session)
    await db.commit()
    token = services.signer.sign(
        PAGE_SESSION, {"sid": session.id, "flow": flow.slug}, settings.session_token_ttl_seconds
    )
    endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, settings.simulator_url)
    sdk = script_source(pin_for(flow.sdk_version, flow.sdk_mode), settings.sdk_dir)
    view = build_page(flow, endpoints, sdk, dpp, session.id, token)
    nonce = csp_nonce(request)
    response = services.templates.TemplateResponse(
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
