"""DPP templates: string leaves are sandboxed Jinja2; visitor input can't break the JSON or the sandbox."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.dpp.render import (
    RENDER_TIMEOUT_SECONDS,
    DppError,
    render_bounded,
    render_dpp,
    render_for_visitor,
)


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
        render_bounded({"questions": ["ok", "{{ broken"]}, {})


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(DppError, match="JSON object"):
        render_dpp(["not", "an", "object"], {})


def test_rendered_size_is_bounded() -> None:
    with pytest.raises(DppError, match="exceeds"):
        render_dpp({"x": "{{ 'a' * 100000 }}"}, {})


SLOW = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"


def test_a_slow_template_fails_within_the_time_limit_and_then_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(DppError, match=f"longer than {RENDER_TIMEOUT_SECONDS:g} s"):
        render_bounded({"x": SLOW}, {})
    assert time.monotonic() - started < RENDER_TIMEOUT_SECONDS + 2
    again = time.monotonic()
    with pytest.raises(DppError, match="longer than"):
        render_bounded({"x": SLOW}, {"visitor": {"n": "another view"}})
    assert time.monotonic() - again < 0.1  # remembered: it never occupies the renderer again
    assert render_bounded({"x": "Hi {{ visitor.n }}"}, {"visitor": {"n": "Ana"}}) == {"x": "Hi Ana"}


def test_a_template_that_allocates_gigabytes_fails_cleanly() -> None:
    with pytest.raises(DppError, match="memory"):
        render_bounded({"x": "{{ 'a' | center(3000000000) }}"}, {})
    assert render_bounded({"x": "ok"}, {}) == {"x": "ok"}


async def test_the_visitor_render_runs_off_the_event_loop() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    loops = "{% for a in range(N) %}{% for b in range(N) %}{% endfor %}{% endfor %}"
    body = {"off-loop": loops.replace("N", "visitor.n|default(0)|int")}  # slow only with a visitor's n
    with pytest.raises(DppError, match="longer than"):
        await render_for_visitor(body, visitor={"n": "99999"}, flow_slug="f", flow_name="F", page_url="u")
    ticker.cancel()
    assert ticks >= RENDER_TIMEOUT_SECONDS / 0.01 / 2  # the loop kept running while the template did


def test_a_runtime_error_in_a_template_is_a_dpp_error_and_unicode_survives() -> None:
    with pytest.raises(DppError, match="ZeroDivisionError"):
        render_bounded({"x": "{{ 1 / 0 }}"}, {})
    assert render_bounded({"x": "{{ visitor.n }} ✓"}, {"visitor": {"n": "Zoë"}}) == {"x": "Zoë ✓"}
