"""Render a DPP template: a JSON document whose string values are sandboxed Jinja2 templates.

Rendering string leaves (rather than the JSON text) means visitor input can never break the JSON
structure, and the sandbox keeps admin-written templates away from Python internals.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDERED_BYTES = 64 * 1024
MAX_DEPTH = 20

_env = ImmutableSandboxedEnvironment(autoescape=False, trim_blocks=True)
# Compiling a leaf costs far more than rendering it, and each page view renders the same few leaves.
_compile = functools.lru_cache(maxsize=1024)(_env.from_string)


class DppError(Exception):
    """The template cannot be rendered; the message says where and why."""


def _render_node(node: Any, context: dict[str, Any], path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise DppError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, str):
        if "{" not in node:
            return node
        try:
            return _compile(node).render(context)
        except TemplateError as exc:
            raise DppError(f"{path}: {exc.message or type(exc).__name__}") from None
    if isinstance(node, dict):
        return {key: _render_node(value, context, f"{path}.{key}", depth + 1) for key, value in node.items()}
    if isinstance(node, list):
        return [_render_node(value, context, f"{path}[{i}]", depth + 1) for i, value in enumerate(node)]
    return node


def render_dpp(body: Any, context: dict[str, Any]) -> dict[str, Any]:
    """Return the rendered DPP object; raise DppError when it is not a bounded JSON object."""
    if not isinstance(body, dict):
        raise DppError("the DPP template must be a JSON object")
    rendered = _render_node(body, context, "$", 0)
    if len(json.dumps(rendered, ensure_ascii=False).encode()) > MAX_RENDERED_BYTES:
        raise DppError(f"the rendered DPP exceeds {MAX_RENDERED_BYTES // 1024} KB")
    return rendered  # type: ignore[no-any-return]


def validate_template(body: Any) -> None:
    """Check a template compiles (with empty context) before it is saved."""
    render_dpp(body, {"visitor": {}, "flow": {}, "session": {}})


def render_for_visitor(
    body: Any, *, visitor: dict[str, str], flow_slug: str, flow_name: str, page_url: str
) -> dict[str, Any]:
    """The DPP a visitor's conversation gets: the template rendered with their values and the page's."""
    return render_dpp(
        body, {"visitor": visitor, "flow": {"slug": flow_slug, "display_name": flow_name, "url": page_url}}
    )
