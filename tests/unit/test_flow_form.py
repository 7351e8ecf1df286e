"""The flow form and the audit diff, as pure functions: every FlowSpec field has a control, values go
round-trip, masks mean "keep", and a diff lists only what changed."""

from __future__ import annotations

from server.admin.audit_log import Change, changes
from server.admin.flow_form import FORM_ERROR, _kind, form_fields, form_values, read_form
from server.flows import FlowSpec, PageContext, TurnOverride

SAVED = FlowSpec(
    slug="acme",
    display_name="Acme",
    client_id="acme-client-0001",
    flow_id="acme-flow-0002",
    turn_override=TurnOverride(
        urls=["turn:t.example"], username="user-abcdefgh1", credential="pass-abcdefgh2"
    ),
    allowed_origins=["https://a.example"],
    retention_days=7,
)


def test_every_field_of_the_import_format_has_a_control_of_its_kind() -> None:
    fields = {field.name: field for field in form_fields(["t1"])}
    assert set(fields) == set(FlowSpec.model_fields)
    kinds = {name: field.kind for name, field in fields.items()}
    assert kinds["client_id"] == kinds["flow_id"] == "secret"
    assert kinds["enabled"] == kinds["genui_enabled"] == "checkbox"
    assert kinds["sdk_mode"] == kinds["upstream"] == kinds["sdk_version"] == kinds["dpp_template"] == "select"
    assert kinds["allowed_origins"] == kinds["genui_origins"] == "lines"
    assert kinds["retention_days"] == "number"
    for structured in ("spoken_commands", "turn_override", "page_context", "custom_endpoints"):
        assert kinds[structured] == "json"
    assert fields["dpp_template"].options == (("", "None"), ("t1", "t1"))


def test_a_saved_flow_posted_back_unchanged_is_the_same_flow() -> None:
    fields = form_fields([])
    shown = form_values(fields, SAVED)
    assert (
        shown["client_id"] == "" and "pass-abcdefgh2" not in str(shown) and "user-abcdefgh1" not in str(shown)
    )
    posted = {name: value for name, value in shown.items() if value is not False}
    posted = {name: "on" if value is True else value for name, value in posted.items()}
    result = read_form(posted, fields, SAVED)
    assert result.errors == {} and result.spec == SAVED


def test_a_cross_field_refusal_lands_on_the_field_it_names() -> None:
    fields = form_fields([])
    posted = {"slug": "x", "display_name": "X", "client_id": "c", "flow_id": "f", "upstream": "kaltura-us"}
    result = read_form({**posted, "custom_endpoints": '{"socket": "https://s.example"}'}, fields)
    assert "only allowed with upstream 'custom'" in result.errors["custom_endpoints"]
    assert FORM_ERROR not in result.errors and result.spec is None


def test_a_diff_shows_what_changed_and_all_fields_of_a_create_or_delete() -> None:
    assert changes({"a": 1, "b": "x"}, {"a": 1, "b": "y"}) == [Change("b", "x", "y")]
    assert changes(None, {"a": [1], "b": None}) == [Change("a", "—", "[1]")]
    assert changes({"a": True}, None) == [Change("a", "true", "—")]
    assert changes("v1", "v2") == [Change("value", "v1", "v2")]
    assert changes({"a": 1}, {"a": 1}) == []


def test_a_nested_model_field_gets_a_json_control_without_special_casing() -> None:
    # What a field like FlowSpec.sdk_options (a nested model) will get once it exists.
    assert _kind("sdk_options", PageContext) == ("json", False, ())
    assert _kind("sdk_options", PageContext | None) == ("json", True, ())
    assert _kind("anything", dict[str, int]) == ("json", False, ())
