"""DPP templates: string leaves are sandboxed Jinja2; visitor input can't break the JSON or the sandbox."""

from __future__ import annotations

import pytest

from server.dpp.render import DppError, render_dpp, validate_template


def test_string_leaves_are_rendered_with_the_visitor_context() -> None:
    body = {
        "user": {"first_name": "{{ visitor.first_name }}"},
        "questions": ["Hi {{ visitor.first_name }}?"],
        "n": 3,
    }
    rendered = render_dpp(body, {"visitor": {"first_name": "Ana"}})
    assert rendered == {"user": {"first_name": "Ana"}, "questions": ["Hi Ana?"], "n": 3}


def test_visitor_input_cannot_change_the_structure() -> None:
    rendered = render_dpp({"name": "{{ visitor.name }}"}, {"visitor": {"name": '", "admin": true, "x": "'}})
    assert list(rendered) == ["name"]


def test_missing_visitor_fields_render_empty() -> None:
    assert render_dpp({"n": "{{ visitor.nope }}"}, {"visitor": {}}) == {"n": ""}


def test_sandbox_blocks_python_internals() -> None:
    with pytest.raises(DppError):
        render_dpp({"x": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}, {})


def test_syntax_errors_name_the_field() -> None:
    with pytest.raises(DppError, match=r"\$\.questions\[1\]"):
        validate_template({"questions": ["ok", "{{ broken"]})


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(DppError, match="JSON object"):
        render_dpp(["not", "an", "object"], {})


def test_rendered_size_is_bounded() -> None:
    with pytest.raises(DppError, match="exceeds"):
        render_dpp({"x": "{{ 'a' * 100000 }}"}, {})
