"""DPP templates in the console: list, editor with live preview, history, diff, publish and roll back, try.

The editor posts plain forms (it works without JavaScript); static/admin/templates.js adds CodeMirror and the
live preview, which posts to a read-only endpoint that renders exactly as the pages do.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Protocol
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from server import dpp_templates
from server.admin.console import ConsoleDep, read_only_post
from server.dependencies import SignerDep
from server.dpp.checks import (
    MAX_VALUE_CHARS,
    SAMPLE_FLOW,
    VARIABLE_NAME,
    CheckedTemplate,
    TemplateInvalid,
    check_template,
    parse_texts,
)
from server.dpp.checks import preview as render_preview
from server.errors import Conflict, Forbidden, Invalid
from server.security.headers import ADMIN_PREFIX
from server.security.signing import ADMIN_PREVIEW, TokenError


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


router = APIRouter()
BASE = f"{ADMIN_PREFIX}/templates"
PREVIEW_PATH = read_only_post(f"{BASE}/preview")
PREVIEW_LINK_SECONDS = 600  # long enough to open it, short enough that a copied link soon stops working
RESERVED_NAMES = frozenset({"new", "preview"})
MAX_FIELD = 256 * 1024
# What a new template starts from: a greeting by first name, the variable it uses, no schema.
STARTER_BODY = _pretty_json(
    {
        "user": {"first_name": "{{ visitor.first_name | default('') }}"},
        "page": {"title": "{{ flow.display_name }}"},
    }
)
STARTER_VARIABLES = _pretty_json(
    [{"name": "first_name", "type": "string", "required": False, "example": "Ada", "source": "query"}]
)
DONE = {
    "created": "Template created; version 1 is published.",
    "saved": "Saved as a new draft version. Publish it when it is ready.",
    "unchanged": "Nothing changed: no new version.",
    "described": "Description saved (the content is unchanged: no new version).",
    "publish": "Published: flows using this template now serve that version.",
    "rollback": "Rolled back: flows using this template now serve that version.",
    "deleted": "Template deleted.",
}

Text = Annotated[str, Form(max_length=MAX_FIELD)]
SchemaText = Annotated[str, Form(alias="schema", max_length=MAX_FIELD)]  # `schema` is BaseModel's own


class HostedPages(Protocol):
    """What the console uses of server.pages (app.state.pages): a sibling edge, so not imported."""

    def page_url(self, scope: Any, slug: str) -> str: ...

    async def preview_view(
        self, scope: Any, slug: str, version_id: int, nonce: str
    ) -> tuple[str, dict[str, str]]: ...


def _pages(request: Request) -> HostedPages:
    pages: HostedPages = request.app.state.pages
    return pages


def _path(name: str) -> str:
    return f"{BASE}/{quote(name, safe='')}"


def _pretty(value: Any) -> str:
    return "" if value is None or value == [] else _pretty_json(value)


def _problems(exc: TemplateInvalid) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in exc.problems:
        found.setdefault(problem.field, []).append(str(problem))
    return found


async def _checked(body: str, variables: str, schema: str) -> CheckedTemplate:
    """Parse and check the editor's three JSON fields; rendering runs in the worker, off the event loop."""

    def check() -> CheckedTemplate:
        return check_template(*parse_texts(body, variables, schema))

    return await asyncio.to_thread(check)


def _name_problem(name: str) -> str | None:
    if not name.strip():
        return "Give the template a name."
    if len(name) > 120:
        return "At most 120 characters."
    if "/" in name or "\\" in name or name != name.strip():
        return "No slashes, and no spaces at either end."
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved: choose another name."
    return None


@router.get(BASE, response_class=HTMLResponse)
async def template_list(console: ConsoleDep, done: str | None = None) -> HTMLResponse:
    rows = await dpp_templates.list_templates(console.db)
    return console.render(
        "templates.html", section="templates", templates=rows, path=_path, flash=DONE.get(done or "")
    )


@router.post(PREVIEW_PATH)
async def preview(console: ConsoleDep, request: Request) -> JSONResponse:
    """The exact DPP text for sample visitor values, or every problem found (changes nothing)."""
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Invalid("bad_preview", "Send a JSON object with body, variables, schema and sample.")
    texts = [data.get(key, "") for key in ("body", "variables", "schema")]
    sample = data.get("sample") or {}
    flow_slug = data.get("flow") or ""
    if not all(isinstance(t, str) and len(t) <= MAX_FIELD for t in texts) or not isinstance(sample, dict):
        raise Invalid("bad_preview", "body, variables and schema are JSON texts; sample is an object.")
    visitor = {str(k): str(v) for k, v in list(sample.items())[:50]}
    flow = SAMPLE_FLOW
    if isinstance(flow_slug, str) and flow_slug:
        display = await dpp_templates.flow_display_name(console.db, flow_slug)
        if display is not None:
            flow = (flow_slug, display, _pages(request).page_url(request.scope, flow_slug))
    try:
        text = await asyncio.to_thread(render_preview, texts[0], texts[1], texts[2], visitor, flow)
    except TemplateInvalid as exc:
        errors = [
            {"field": p.field, "message": str(p), "line": p.line, "column": p.column, "path": p.path}
            for p in exc.problems
        ]
        # 200: a template with mistakes is a normal answer while typing (a 4xx would log a browser error).
        return JSONResponse({"errors": errors})
    return JSONResponse({"dpp": text})


def _editor(
    console: ConsoleDep,
    *,
    detail: dpp_templates.TemplateDetail | None,
    form: dict[str, str],
    errors: dict[str, list[str]] | None = None,
    flows: list[tuple[str, str]] | None = None,
    status: int = 200,
    flash: str | None = None,
) -> HTMLResponse:
    return console.render(
        "template_edit.html",
        status=status,
        section="templates",
        detail=detail,
        form=form,
        errors=errors or {},
        flows=flows or [],
        path=_path,
        preview_path=PREVIEW_PATH,
        flash=flash,
    )


@router.get(f"{BASE}/new", response_class=HTMLResponse)
async def new_template(console: ConsoleDep) -> HTMLResponse:
    console.require_admin()
    form = {"name": "", "description": "", "body": STARTER_BODY, "variables": STARTER_VARIABLES, "schema": ""}
    return _editor(console, detail=None, form=form)


@router.post(f"{BASE}/new", response_class=HTMLResponse)
async def create_template(
    console: ConsoleDep,
    name: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    body: Text = "",
    variables: Text = "",
    dpp_schema: SchemaText = "",
) -> Response:
    schema = dpp_schema
    form = {"name": name, "description": description, "body": body, "variables": variables, "schema": schema}
    errors: dict[str, list[str]] = {}
    problem = _name_problem(name)
    if problem:
        errors["name"] = [problem]
    try:
        checked = await _checked(body, variables, schema)
    except TemplateInvalid as exc:
        errors.update(_problems(exc))
    if errors:
        return _editor(console, detail=None, form=form, errors=errors, status=400)
    try:
        await dpp_templates.create_template(console.db, console.admin.email, name, description, checked)
    except Conflict as exc:
        return _editor(console, detail=None, form=form, errors={"name": [exc.message]}, status=409)
    return console.redirect(f"{_path(name)}?done=created")


async def _editor_for(
    console: ConsoleDep,
    name: str,
    version: int | None,
    form: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
    flash: str | None = None,
) -> HTMLResponse:
    detail = await dpp_templates.template_detail(console.db, name, version)
    if form is None:
        shown = detail.shown
        form = {
            "name": detail.name,
            "description": detail.description,
            "body": _pretty(shown.body) if shown else "{}\n",
            "variables": _pretty(shown.variables) if shown else "",
            "schema": _pretty(shown.schema) if shown else "",
        }
    flows = await dpp_templates.flow_choices(console.db)
    # The flows that use the template first: those are where a draft is most likely to be tried.
    flows.sort(key=lambda flow: flow[0] not in detail.flows)
    return _editor(console, detail=detail, form=form, errors=errors, flows=flows, status=status, flash=flash)


@router.get(f"{BASE}/{{name}}", response_class=HTMLResponse)
async def edit_template(
    console: ConsoleDep, name: str, version: int | None = None, done: str | None = None
) -> HTMLResponse:
    return await _editor_for(console, name, version, flash=DONE.get(done or ""))


@router.post(f"{BASE}/{{name}}", response_class=HTMLResponse)
async def save_template(
    console: ConsoleDep,
    signer: SignerDep,
    request: Request,
    name: str,
    description: Annotated[str, Form(max_length=2000)] = "",
    body: Text = "",
    variables: Text = "",
    dpp_schema: SchemaText = "",
    then: Annotated[str, Form(max_length=20)] = "",
    flow: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    schema = dpp_schema
    form = {"name": name, "description": description, "body": body, "variables": variables, "schema": schema}
    try:
        checked = await _checked(body, variables, schema)
    except TemplateInvalid as exc:
        return await _editor_for(console, name, None, form=form, errors=_problems(exc), status=400)
    saved = await dpp_templates.save_version(console.db, console.admin.email, name, description, checked)
    if then == "try":  # saved as a draft (when changed), then opened: the newest version is what was typed
        newest = (await dpp_templates.template_detail(console.db, name)).versions[0].version
        samples = await _sample_values(request)
        return await _open_preview(console, signer, name, saved.version or newest, flow, samples)
    if saved.version is None:
        return console.redirect(f"{_path(name)}?done={'described' if saved.described else 'unchanged'}")
    return console.redirect(f"{_path(name)}?done=saved")


async def _sample_values(request: Request) -> dict[str, str]:
    """The live preview's sample values the editor form carries (`sample.<name>`): the preview page's
    visitor values."""
    values = {}
    for key, value in (await request.form()).multi_items():
        name = key.removeprefix("sample.")
        if key.startswith("sample.") and isinstance(value, str) and VARIABLE_NAME.match(name) and value:
            values[name] = value[:MAX_VALUE_CHARS]
    return values


@router.post(f"{BASE}/{{name}}/publish")
async def publish_version(console: ConsoleDep, name: str, version: Annotated[int, Form(ge=1)]) -> Response:
    action = await dpp_templates.publish(console.db, console.admin.email, name, version)
    return console.redirect(f"{_path(name)}?done={action}")


@router.post(f"{BASE}/{{name}}/delete")
async def delete_template(console: ConsoleDep, name: str) -> Response:
    await dpp_templates.delete_template(console.db, console.admin.email, name)
    return console.redirect(f"{BASE}?done=deleted")


@router.get(f"{BASE}/{{name}}/diff", response_class=HTMLResponse)
async def diff_versions(console: ConsoleDep, name: str, a: int, b: int) -> HTMLResponse:
    old, new = await dpp_templates.version_contents(console.db, name, [a, b])
    detail = await dpp_templates.template_detail(console.db, name)
    return console.render(
        "template_diff.html",
        section="templates",
        detail=detail,
        old=old,
        new=new,
        lines=dpp_templates.diff(old, new),
        path=_path,
    )


async def _open_preview(
    console: ConsoleDep,
    signer: SignerDep,
    name: str,
    version: int,
    flow: str,
    samples: dict[str, str] | None = None,
) -> Response:
    if not flow:
        raise Invalid("no_flow", "Choose the flow to try the template on.")
    version_id = await dpp_templates.version_id(console.db, name, version)
    token = signer.sign(ADMIN_PREVIEW, {"flow": flow, "v": version_id}, PREVIEW_LINK_SECONDS)
    query = f"?{urlencode(samples)}" if samples else ""
    return console.redirect(f"{ADMIN_PREFIX}/preview/{token}{query}")


@router.post(f"{BASE}/{{name}}/try")
async def try_version(
    console: ConsoleDep,
    signer: SignerDep,
    name: str,
    version: Annotated[int, Form(ge=1)],
    flow: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """A short-lived signed link to the flow's page with this version (it is never listed anywhere)."""
    return await _open_preview(console, signer, name, version, flow)


@router.get(f"{ADMIN_PREFIX}/preview/{{token}}", response_class=HTMLResponse)
async def preview_page(console: ConsoleDep, signer: SignerDep, request: Request, token: str) -> Response:
    """The flow's hosted page with the linked template version; its conversation is marked as a preview."""
    console.require_admin()
    try:
        claims = signer.verify(ADMIN_PREVIEW, token)
    except TokenError as exc:
        raise Forbidden(f"preview_{exc.code}", f"This preview link is not valid ({exc}).") from None
    flow, version_id = claims.get("flow"), claims.get("v")
    if not isinstance(flow, str) or not isinstance(version_id, int):
        raise Forbidden("preview_invalid", "This preview link is not valid.")
    nonce = request.scope["state"]["csp_nonce"]
    html, headers = await _pages(request).preview_view(request.scope, flow, version_id, nonce)
    return HTMLResponse(html, headers=headers)
