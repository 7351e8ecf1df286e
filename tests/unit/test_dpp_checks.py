"""DPP template checks: JSON mistakes by line and column, declared variables, JSON Schema by path, and
Kaltura's published example schemas with their sample DPPs imported as templates."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.dpp.checks import (
    TemplateInvalid,
    check_schema,
    check_template,
    check_variables,
    example_values,
    parse_json,
    parse_texts,
    preview,
)
from server.dpp.render import visitor_values
from server.flows import FlowsDocument
from tests.kaltura_examples import FILES, examples_dir


def test_a_json_mistake_names_its_line_and_column() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        parse_json('{\n  "a": 1\n  "b": 2\n}', "body")
    (problem,) = caught.value.problems
    assert (problem.field, problem.line, problem.column) == ("body", 3, 3)
    assert str(problem).startswith("line 3, column 3: Expecting ','")


def test_each_of_the_three_fields_reports_its_own_mistake() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        parse_texts("{", "[", "{}")
    assert [p.field for p in caught.value.problems] == ["body", "variables"]
    assert parse_texts("{}", "  ", "") == ({}, None, None)


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ([{"name": "First"}], "$[0].name: a lower-case name"),
        ([{"name": "a"}, {"name": "a"}], "'a' is declared twice"),
        ([{"name": "a", "type": "date"}], "$[0].type: one of string, integer, number, boolean"),
        ([{"name": "a", "source": "cookie"}], "$[0].source: one of query, fixed"),
        ([{"name": "a", "source": "fixed"}], "a fixed variable needs its value as default"),
        ([{"name": "a", "type": "integer", "example": "ten"}], "$[0].example: 'ten' is not a integer"),
        ([{"name": "a", "colour": "red"}], "unknown field(s) colour"),
        ({"name": "a"}, "must be a JSON list"),
    ],
)
def test_declared_variables_are_checked(variables: Any, says: str) -> None:
    with pytest.raises(TemplateInvalid) as caught:
        check_variables(variables)
    assert says in str(caught.value)


def test_fixed_values_win_and_defaults_fill_gaps() -> None:
    variables = check_variables(
        [
            {"name": "plan", "source": "fixed", "default": "gold"},
            {"name": "lang", "default": "en"},
            {"name": "first_name", "example": "Ada"},
        ]
    )
    assert visitor_values(variables, {"plan": "free", "first_name": "Bo"}) == {
        "plan": "gold",
        "first_name": "Bo",
        "lang": "en",
    }
    assert example_values(variables) == {"first_name": "Ada", "plan": "gold", "lang": "en"}


def test_a_schema_that_is_not_a_valid_json_schema_is_refused() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        check_schema({"type": "object", "properties": {"a": {"type": 5}}})
    assert "not a valid JSON Schema" in str(caught.value)


def test_the_rendered_dpp_is_held_to_the_schema_with_the_declared_examples() -> None:
    schema = {
        "type": "object",
        "required": ["user"],
        "properties": {
            "user": {"type": "object", "properties": {"age": {"type": "string", "pattern": "^[0-9]+$"}}}
        },
    }
    body = {"user": {"age": "{{ visitor.age }}"}}
    assert check_template(body, [{"name": "age", "example": "42"}], schema).schema == schema
    with pytest.raises(TemplateInvalid) as caught:
        check_template(body, [{"name": "age", "example": "forty"}], schema)
    (problem,) = caught.value.problems
    assert problem.path == "$.user.age" and "does not match" in problem.message


def test_a_leaf_that_does_not_render_is_named_by_its_path() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        check_template({"user": {"names": ["ok", "{{ visitor.n "]}}, None, None)
    (problem,) = caught.value.problems
    assert problem.path == "$.user.names[1]" and "does not render" in problem.message


def test_preview_is_the_compact_text_the_relay_sends() -> None:
    text = preview('{"a": "{{ visitor.n }}", "b": [1, "é"]}', '[{"name": "n"}]', "", {"n": "Zoë"})
    assert text == '{"a":"Zoë","b":[1,"é"]}'


EXAMPLES = tuple(FILES)


def _examples() -> Path:
    return examples_dir()


def _samples(base: Path, name: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """An example's schema and its sample DPPs: the files beside it, and the schema's own `examples`."""
    schema = json.loads((base / name / "dynamic_page_prompt.schema.json").read_text())
    samples = [
        (p.name, json.loads(p.read_text()))
        for p in sorted((base / name).glob("dynamic_page_prompt_samples/*.json"))
    ]
    samples += [(f"examples[{i}]", sample) for i, sample in enumerate(schema.get("examples", []))]
    return schema, samples


def _document(name: str, body: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    return {"dpp_templates": [{"name": name, "body": body, "schema": schema}]}


@pytest.mark.parametrize("example", EXAMPLES)
def test_kaltura_example_schemas_and_their_samples_import_as_templates(example: str) -> None:
    schema, samples = _samples(_examples(), example)
    assert samples, f"{example} has no sample DPPs"
    for file, sample in samples:
        document = FlowsDocument.model_validate(_document(f"{example}/{file}", sample, schema))
        (template,) = document.dpp_templates
        assert template.dpp_schema == schema and template.body == sample
        # ...and they round-trip through the export format under the name `schema`.
        assert FlowsDocument.model_validate_json(document.model_dump_json()) == document


def _first_string_path(node: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    if isinstance(node, str):
        return path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found = _first_string_path(value, (*path, key))
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_kaltura_sample_with_one_field_of_another_type_is_refused_naming_its_path(example: str) -> None:
    schema, samples = _samples(_examples(), example)
    _, sample = samples[0]
    broken = copy.deepcopy(sample)
    path = _first_string_path({k: v for k, v in broken.items() if k not in ("v", "mode")})
    assert path
    target: Any = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 12345  # a number where the schema wants a string
    with pytest.raises(ValidationError) as caught:
        FlowsDocument.model_validate(_document(example, broken, schema))
    json_path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    assert f"the rendered DPP at {json_path}: 12345 is not of type 'string'" in str(caught.value)


def test_a_check_that_overruns_leaves_the_visitors_renderer_running() -> None:
    from server.dpp import render

    assert render.render_bounded({"x": "{{ 1 }}"}, {}) == {"x": "1"}
    visitors = render._renderer._process
    assert visitors is not None
    with pytest.raises(TemplateInvalid) as caught:
        check_template(
            {"x": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"},
            None,
            None,
        )
    assert "longer than 1 s" in str(caught.value)
    assert render._renderer._process is visitors and visitors.poll() is None
