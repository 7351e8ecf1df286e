"""Render a DPP template: a JSON document whose string values are sandboxed Jinja2 templates.

Rendering string leaves (rather than the JSON text) means visitor input can never break the JSON
structure, and the sandbox keeps admin-written templates away from Python internals. The sandbox does not
bound work (nested loops, big powers, padding filters), so templates run in a worker process with a time
and memory limit: a slow template fails in RENDER_TIMEOUT_SECONDS instead of holding the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDERED_BYTES = 64 * 1024
MAX_DEPTH = 20
RENDER_TIMEOUT_SECONDS = 1.0  # a real template renders in about a millisecond
WORKER_START_SECONDS = 30.0  # starting Python under load; not counted against the template
WORKER_MEMORY_BYTES = 1024 * 1024 * 1024

_env = ImmutableSandboxedEnvironment(autoescape=False, trim_blocks=True)


class DppError(Exception):
    """The template cannot be rendered; the message says where and why."""


def _render_node(node: Any, context: dict[str, Any], path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise DppError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, str):
        if "{" not in node:
            return node
        try:
            return _env.from_string(node).render(context)
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


def _work(conn: Connection) -> None:
    """The worker process: render each request, answer (True, dpp) or (False, reason), until EOF."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    conn.send("ready")
    while True:
        try:
            body, context = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, render_dpp(body, context)))
        except DppError as exc:
            conn.send((False, str(exc)))
        except MemoryError:
            conn.send((False, "the template uses too much memory"))
        except RecursionError:
            conn.send((False, "the template recurses too deeply"))


class _Renderer:
    """One worker process, started on first use and replaced after a template overran (it is killed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._too_slow: set[str] = set()  # templates that overran once are refused at once from then on

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")  # fork would copy the server's threads and sockets
        ours, theirs = context.Pipe()
        process = context.Process(target=_work, args=(theirs,), name="dpp-render", daemon=True)
        process.start()
        theirs.close()
        if not ours.poll(WORKER_START_SECONDS) or ours.recv() != "ready":
            process.kill()
            raise DppError("the template renderer did not start")
        self._process, self._conn = process, ours
        return ours

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def render(self, body: Any, context: dict[str, Any]) -> dict[str, Any]:
        key = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        too_slow = DppError(f"the template took longer than {RENDER_TIMEOUT_SECONDS:g} s to render")
        with self._lock:
            if key in self._too_slow:
                raise too_slow
            conn = self._conn or self._start()
            try:
                conn.send((body, context))
                if not conn.poll(RENDER_TIMEOUT_SECONDS):
                    self._stop()
                    if len(self._too_slow) < 1024:
                        self._too_slow.add(key)
                    raise too_slow
                ok, value = conn.recv()
            except (OSError, EOFError):  # the worker died (killed by the OS, say): a new one next time
                self._stop()
                raise DppError("the template renderer stopped") from None
        if not ok:
            raise DppError(value)
        return value  # type: ignore[no-any-return]


_renderer = _Renderer()


def render_bounded(body: Any, context: dict[str, Any]) -> dict[str, Any]:
    """`render_dpp` in the worker, within RENDER_TIMEOUT_SECONDS and WORKER_MEMORY_BYTES (blocking)."""
    return _renderer.render(body, context)


def validate_template(body: Any) -> None:
    """Check a template compiles and renders in time (with empty context) before it is saved."""
    render_bounded(body, {"visitor": {}, "flow": {}, "session": {}})


async def render_for_visitor(
    body: Any, *, visitor: dict[str, str], flow_slug: str, flow_name: str, page_url: str
) -> dict[str, Any]:
    """The DPP a visitor's conversation gets: the template rendered with their values and the page's."""
    context = {"visitor": visitor, "flow": {"slug": flow_slug, "display_name": flow_name, "url": page_url}}
    return await asyncio.to_thread(render_bounded, body, context)
