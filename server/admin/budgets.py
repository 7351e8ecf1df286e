"""Budgets in the console: each flow's usage against its budget, and the kill switches (per flow, global).

A switch is stored (and audited) first; this instance then asks every instance to end the conversations it
stops at once, and each instance's own budget check would find the switch within seconds anyway.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from server import budgets
from server.admin.console import ConsoleDep
from server.dependencies import EnderDep, SharedDep
from server.page_budgets import heartbeat_interval
from server.security.headers import ADMIN_PREFIX

router = APIRouter()
BUDGETS = f"{ADMIN_PREFIX}/budgets"
DONE = {  # ?done=… after a change: a fixed sentence, never text from the request
    "killed": "Kill switch on: its live conversations are ending and new ones are refused.",
    "revived": "Kill switch off: conversations may start again.",
    "unchanged": "Nothing changed: the switch was already so.",
}


@router.get(BUDGETS, response_class=HTMLResponse)
async def budget_page(console: ConsoleDep, shared: SharedDep) -> HTMLResponse:
    state = await budgets.load(console.db)
    check = console.settings.budget_check_seconds
    return console.render(
        "budgets.html",
        section="budgets",
        rows=await budgets.usage(shared, state),
        global_switch=state.global_switch,
        flow_switches=state.flow_switches,
        check_seconds=check,
        # A page hears a switch at its next beat, which sees switches at most a check old.
        heartbeat_seconds=f"{heartbeat_interval(check) + check:.3g}",
        flash=DONE.get(console.request.query_params.get("done", "")),
    )


async def _switch(console: ConsoleDep, ender: EnderDep, slug: str | None, engaged: bool) -> Response:
    changed = await budgets.set_switch(console.db, slug, engaged, console.admin.email)
    if changed and engaged:
        if slug is None:
            await ender.end_conversations("kill_switch", every_flow=True)
        else:
            await ender.end_conversations("kill_switch", flow_slug=slug)
    done = "unchanged" if not changed else "killed" if engaged else "revived"
    return console.redirect(f"{BUDGETS}?done={done}")


@router.post(f"{BUDGETS}/kill")
async def kill_all(console: ConsoleDep, ender: EnderDep) -> Response:
    return await _switch(console, ender, None, True)


@router.post(f"{BUDGETS}/revive")
async def revive_all(console: ConsoleDep, ender: EnderDep) -> Response:
    return await _switch(console, ender, None, False)


@router.post(f"{BUDGETS}/{{slug}}/kill")
async def kill_flow(slug: str, console: ConsoleDep, ender: EnderDep) -> Response:
    return await _switch(console, ender, slug, True)


@router.post(f"{BUDGETS}/{{slug}}/revive")
async def revive_flow(slug: str, console: ConsoleDep, ender: EnderDep) -> Response:
    return await _switch(console, ender, slug, False)
