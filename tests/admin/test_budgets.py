"""Budgets in the console: limits on the flow form, usage against them, and the kill switches (audited,
admins only, CSRF-checked); and the same numbers for REST clients."""

from __future__ import annotations

import httpx

from server import api_tokens, budgets
from server.settings import Settings
from tests.admin.console_client import ConsoleClient
from tests.admin.forms import error_beside, form_values
from tests.admin.test_flows import audit_entries, new_flow, saved_spec
from tests.support import ServerThread, with_database


def test_budget_limits_are_validated_beside_their_fields_and_saved(
    admin: ConsoleClient, console_settings: Settings
) -> None:
    admin.get("/admin/flows/new")
    bad = admin.post(
        "/admin/flows/new",
        new_flow(
            max_duration_seconds="0", idle_cut_seconds="soon", max_concurrent="-3", minutes_per_day="1e9"
        ),
    )
    assert bad.status_code == 400
    assert "greater than or equal to 1" in (error_beside(bad.text, "max_duration_seconds") or "")
    assert "whole number" in (error_beside(bad.text, "idle_cut_seconds") or "")
    assert "greater than or equal to 1" in (error_beside(bad.text, "max_concurrent") or "")
    assert "whole number" in (error_beside(bad.text, "minutes_per_day") or "")
    assert form_values(bad.text, "/admin/flows/new")["idle_cut_seconds"] == "soon"
    assert audit_entries(console_settings, "acme") == []

    good = admin.post(
        "/admin/flows/new",
        new_flow(
            max_duration_seconds="600", idle_cut_seconds="90", max_concurrent="5", minutes_per_day="300"
        ),
    )
    assert good.status_code == 303
    spec = saved_spec(console_settings, "acme")
    assert (spec.max_duration_seconds, spec.idle_cut_seconds, spec.max_concurrent, spec.minutes_per_day) == (
        600,
        90,
        5,
        300,
    )
    # Empty means no limit of that kind.
    admin.get("/admin/flows/acme/edit")
    cleared = admin.post("/admin/flows/acme/edit", new_flow(max_concurrent="", minutes_per_day="300"))
    assert cleared.status_code == 303
    assert saved_spec(console_settings, "acme").max_concurrent is None
    page = admin.get("/admin/budgets").text
    assert "acme" in page and "0.0 / 300" in page


def test_kill_switches_are_audited_and_shown(admin: ConsoleClient, console_settings: Settings) -> None:
    admin.get("/admin/budgets")
    assert admin.post("/admin/budgets/demo/kill").status_code == 303
    page = admin.get("/admin/budgets?done=killed").text
    assert "Kill switch on" in page and "Turn demo back on" in page
    state = with_database(console_settings, budgets.load)
    assert state.flows["demo"].killed and not state.all_killed
    assert admin.post("/admin/budgets/kill").status_code == 303
    assert with_database(console_settings, budgets.load).all_killed
    assert "Turn every flow back on" in admin.get("/admin/budgets").text
    assert admin.post("/admin/budgets/kill").headers["location"].endswith("done=unchanged")
    assert admin.post("/admin/budgets/revive").status_code == 303
    assert admin.post("/admin/budgets/demo/revive").status_code == 303
    state = with_database(console_settings, budgets.load)
    assert not state.all_killed and not state.flows["demo"].killed
    actions = [(e.action, e.target_type) for e in audit_entries(console_settings, "demo")]
    assert ("kill", "flow") in actions and ("revive", "flow") in actions
    assert [e.action for e in audit_entries(console_settings, "all flows")] == ["revive", "kill"]
    assert admin.post("/admin/budgets/no-such-flow/kill").status_code == 404


def test_viewers_see_usage_but_cannot_switch_and_forged_posts_are_refused(
    viewer: ConsoleClient, admin: ConsoleClient, console_settings: Settings
) -> None:
    page = viewer.get("/admin/budgets")
    assert page.status_code == 200 and "demo" in page.text
    assert page.text.count('method="post"') == 1  # sign-out only
    for path in ("/admin/budgets/kill", "/admin/budgets/demo/kill"):
        assert viewer.post(path).status_code == 403, path
    admin.get("/admin/budgets")
    forged = admin.http.post("/admin/budgets/kill", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    state = with_database(console_settings, budgets.load)
    assert not state.all_killed and not state.flows["demo"].killed


def test_rest_clients_read_budgets_with_their_own_scope(
    console: ServerThread, console_settings: Settings, admin: ConsoleClient
) -> None:
    reader = with_database(
        console_settings, lambda db: api_tokens.create_token(db, "ops", ["budgets:read"], actor="test")
    )
    transcripts = with_database(
        console_settings, lambda db: api_tokens.create_token(db, "crm", ["transcripts:read"], actor="test")
    )
    admin.get("/admin/budgets")
    admin.post("/admin/budgets/demo/kill")
    answer = httpx.get(f"{console.url}/api/v1/budgets", headers={"Authorization": f"Bearer {reader}"})
    assert answer.status_code == 200
    report = answer.json()
    demo = next(flow for flow in report["flows"] if flow["flow"] == "demo")
    assert report["all_killed"] is False
    assert demo == {
        "flow": "demo",
        "killed": True,
        "live": None,  # counted for capped flows only
        "max_concurrent": None,
        "minutes_today": 0.0,
        "minutes_per_day": None,
        "max_duration_seconds": None,
        "idle_cut_seconds": None,
    }
    other = httpx.get(f"{console.url}/api/v1/budgets", headers={"Authorization": f"Bearer {transcripts}"})
    assert other.status_code == 403
