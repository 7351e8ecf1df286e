"""Flows in the console: the list, a flow's page (hosted link, embed snippet), create, edit, enable and
disable, delete. The form itself is server.admin.flow_form; the changes are server.flows services."""

from __future__ import annotations

import html
from datetime import UTC, datetime, time

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from server import flows
from server.admin.console import Console, ConsoleDep
from server.admin.flow_form import FORM_ERROR, form_fields, form_values, masked_secrets, read_form
from server.dependencies import page_base_url
from server.errors import InvalidField
from server.flows import FlowSpec
from server.security.csp import POWERFUL_FEATURES
from server.security.headers import ADMIN_PREFIX

router = APIRouter()
FLOWS = f"{ADMIN_PREFIX}/flows"
DONE = {  # ?done=… after a change: a fixed sentence, never text from the request
    "created": "Flow created.",
    "saved": "Flow saved.",
    "enabled": "Flow enabled: its page is live.",
    "disabled": "Flow disabled: its page answers 404.",
    "deleted": "Flow deleted, with its conversations and transcripts.",
}


def _flash(console: Console) -> str | None:
    return DONE.get(console.request.query_params.get("done", ""))


def _hosted_url(console: Console, slug: str) -> str:
    return f"{page_base_url(console.request.scope, console.settings)}/a/{slug}"


def embed_snippet(url: str, title: str) -> str:
    """An <iframe> of the hosted page that lets it use the microphone, camera, autoplay and screen capture."""
    allow = "; ".join(POWERFUL_FEATURES)
    return (
        f'<iframe src="{html.escape(url)}" title="{html.escape(title)}" allow="{allow}"'
        ' width="480" height="720"></iframe>'
    )


@router.get(FLOWS, response_class=HTMLResponse)
async def flow_list(console: ConsoleDep) -> HTMLResponse:
    midnight = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    summaries = await flows.flow_summaries(console.db, midnight)
    return console.render("flows/list.html", section="flows", flows=summaries, flash=_flash(console))


async def _form(
    console: Console,
    *,
    saved: FlowSpec | None,
    shown: dict[str, str | bool] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    fields = form_fields(await flows.template_names(console.db))
    return console.render(
        "flows/form.html",
        status=status,
        section="flows",
        fields=fields,
        values=shown if shown is not None else form_values(fields, saved),
        errors=errors or {},
        form_error=(errors or {}).get(FORM_ERROR),
        saved=saved,
        secrets=masked_secrets(saved) if saved else {},
    )


@router.get(f"{FLOWS}/new", response_class=HTMLResponse)
async def new_flow(console: ConsoleDep) -> HTMLResponse:
    console.require_admin()
    return await _form(console, saved=None)


@router.post(f"{FLOWS}/new", response_class=HTMLResponse)
async def create_flow(console: ConsoleDep) -> Response:
    fields = form_fields(await flows.template_names(console.db))
    result = read_form(await console.request.form(), fields)
    if result.spec is not None:
        try:
            await flows.create_flow(
                console.db, result.spec, console.admin.email, console.settings.allowed_upstream_hosts
            )
        except InvalidField as exc:
            result.errors[exc.field] = exc.message
        else:
            return console.redirect(f"{FLOWS}/{result.spec.slug}?done=created")
    return await _form(console, saved=None, shown=result.shown, errors=result.errors, status=400)


@router.get(f"{FLOWS}/{{slug}}", response_class=HTMLResponse)
async def flow_page(slug: str, console: ConsoleDep) -> HTMLResponse:
    spec = await flows.flow_spec(console.db, slug)
    url = _hosted_url(console, spec.slug)
    fields = form_fields([])
    return console.render(
        "flows/show.html",
        section="flows",
        flow=spec,
        fields=fields,
        values=form_values(fields, spec),
        secrets=masked_secrets(spec),
        hosted_url=url,
        embed=embed_snippet(url, spec.display_name),
        flash=_flash(console),
    )


@router.get(f"{FLOWS}/{{slug}}/edit", response_class=HTMLResponse)
async def edit_flow(slug: str, console: ConsoleDep) -> HTMLResponse:
    console.require_admin()
    return await _form(console, saved=await flows.flow_spec(console.db, slug))


@router.post(f"{FLOWS}/{{slug}}/edit", response_class=HTMLResponse)
async def update_flow(slug: str, console: ConsoleDep) -> Response:
    saved = await flows.flow_spec(console.db, slug)
    fields = form_fields(await flows.template_names(console.db))
    result = read_form(await console.request.form(), fields, saved)
    if result.spec is not None:
        try:
            await flows.update_flow(
                console.db, slug, result.spec, console.admin.email, console.settings.allowed_upstream_hosts
            )
        except InvalidField as exc:
            result.errors[exc.field] = exc.message
        else:
            return console.redirect(f"{FLOWS}/{result.spec.slug}?done=saved")
    return await _form(console, saved=saved, shown=result.shown, errors=result.errors, status=400)


@router.post(f"{FLOWS}/{{slug}}/enable")
async def enable_flow(slug: str, console: ConsoleDep) -> Response:
    await flows.set_flow_enabled(console.db, slug, True, console.admin.email)
    return console.redirect(f"{FLOWS}/{slug}?done=enabled")


@router.post(f"{FLOWS}/{{slug}}/disable")
async def disable_flow(slug: str, console: ConsoleDep) -> Response:
    await flows.set_flow_enabled(console.db, slug, False, console.admin.email)
    return console.redirect(f"{FLOWS}/{slug}?done=disabled")


@router.get(f"{FLOWS}/{{slug}}/delete", response_class=HTMLResponse)
async def confirm_delete(slug: str, console: ConsoleDep) -> HTMLResponse:
    console.require_admin()
    spec = await flows.flow_spec(console.db, slug)
    losses = await flows.flow_losses(console.db, slug)
    return console.render("flows/delete.html", section="flows", flow=spec, losses=losses)


@router.post(f"{FLOWS}/{{slug}}/delete")
async def delete_flow(slug: str, console: ConsoleDep) -> Response:
    await flows.delete_flow(console.db, slug, console.admin.email)
    return console.redirect(f"{FLOWS}?done=deleted")
