"""Render a DPP template: a JSON document whose string values are sandboxed Jinja2 templates.

Rendering string leaves (rather than the JSON text) means visitor input can never break the JSON
structure, and the sandbox keeps admin-written templates away from Python internals. The sandbox does not
bound work (nested loops, big powers, padding filters), so templates run in a worker process with a time
and memory limit: a slow template fails in RENDER_TIMEOUT_SECONDS instead of holding the event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import IO, Any

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDERED_BYTES = 64 * 1024
MAX_DEPTH = 20
RENDER_TIMEOUT_SECONDS = 1.0  # a real template renders in about a millisecond
WORKER_START_SECONDS = 30.0  # starting Python under load; not counted against the template
WORKER_MEMORY_BYTES = 1024 * 1024 * 1024


class _Sandbox(ImmutableSandboxedEnvironment):
    """Refuses an unsafe attribute outright: Jinja's sandbox would render `{{ x.__class__ }}` as an empty
    string, hiding from the author that the template reached for Python internals."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


_env = _Sandbox(autoescape=False, trim_blocks=True)
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


def serve_stdio() -> None:
    """The worker process: one JSON request per line on stdin, one answer per line on stdout, until EOF."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    out = sys.stdout
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer: dict[str, Any] = {"dpp": render_dpp(request["body"], request["context"])}
        except DppError as exc:
            answer = {"error": str(exc)}
        except MemoryError:
            answer = {"error": "the template uses too much memory"}
        except RecursionError:
            answer = {"error": "the template recurses too deeply"}
        except Exception as exc:  # e.g. {{ 1 / 0 }}: the template's fault, and the worker keeps serving
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")  # ASCII both ways: no dependence on the locale
        out.flush()


# A fresh interpreter (not multiprocessing's spawn, which re-imports the caller's __main__ script).
WORKER_COMMAND = [
    sys.executable,
    "-I",
    "-c",
    "import sys; sys.path[:0] = sys.argv[1:]; from server.dpp.render import serve_stdio; serve_stdio()",
]


class _Renderer:
    """One worker process, started on first use and replaced after a template overran (it is killed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._too_slow: set[str] = set()  # templates that overran once are refused at once from then on

    def _read_line(self, stdout: IO[bytes], timeout: float) -> bytes | None:
        """One line from the worker, or None when it does not come within `timeout` or the worker ended."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                return None
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _start(self) -> subprocess.Popen[bytes]:
        path = [entry for entry in sys.path if entry]  # the server's own imports, wherever it runs from
        command = [*WORKER_COMMAND, *path]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # noqa: S603 - ours
        self._process, self._buffer = process, b""
        assert process.stdout is not None
        if self._read_line(process.stdout, WORKER_START_SECONDS) != b'"ready"':
            self.close()
            raise DppError("the template renderer did not start")
        return process

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()

    def render(self, body: Any, context: dict[str, Any]) -> dict[str, Any]:
        request = json.dumps({"body": body, "context": context}, default=str)
        key = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        too_slow = DppError(f"the template took longer than {RENDER_TIMEOUT_SECONDS:g} s to render")
        with self._lock:
            if key in self._too_slow:
                raise too_slow
            process = self._process or self._start()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(request.encode() + b"\n")
                process.stdin.flush()
            except OSError:  # the worker died (killed by the OS, say): a new one next time
                self.close()
                raise DppError("the template renderer stopped") from None
            line = self._read_line(process.stdout, RENDER_TIMEOUT_SECONDS)
            if line is None:
                overran = process.poll() is None
                self.close()
                if not overran:
                    raise DppError("the template renderer stopped")
                if len(self._too_slow) < 1024:
                    self._too_slow.add(key)
                raise too_slow
        answer = json.loads(line)
        if "error" in answer:
            raise DppError(answer["error"])
        return answer["dpp"]  # type: ignore[no-any-return]


_renderer = _Renderer()
# Checks and the console's live preview get a worker of their own: an admin typing a template that overruns
# (the worker is killed and restarted) never holds up a visitor's page.
_checks_renderer = _Renderer()
atexit.register(_renderer.close)
atexit.register(_checks_renderer.close)


def render_bounded(body: Any, context: dict[str, Any], *, checking: bool = False) -> dict[str, Any]:
    """`render_dpp` in the worker, within RENDER_TIMEOUT_SECONDS and WORKER_MEMORY_BYTES (blocking);
    `checking`: in the worker kept for checks and previews."""
    return (_checks_renderer if checking else _renderer).render(body, context)


def text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def visitor_values(variables: list[dict[str, Any]] | None, given: dict[str, str]) -> dict[str, str]:
    """The visitor values a template renders with: a fixed variable's value wins over the query string; a
    declared default fills a value the query string did not give."""
    values = dict(given)
    for variable in variables or []:
        name = variable["name"]
        fixed = variable.get("source") == "fixed"
        if fixed or (name not in values and variable.get("default") is not None):
            values[name] = text_value(variable["default"])
    return values


def page_context(
    visitor: dict[str, str],
    flow_slug: str,
    flow_name: str,
    page_url: str,
    variables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What a template sees on a page: the visitor's values (with the template's declared fixed values and
    defaults) and the flow's."""
    flow = {"slug": flow_slug, "display_name": flow_name, "url": page_url}
    return {"visitor": visitor_values(variables, visitor), "flow": flow}


async def render_for_visitor(
    body: Any,
    *,
    visitor: dict[str, str],
    flow_slug: str,
    flow_name: str,
    page_url: str,
    variables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The DPP a visitor's conversation gets: the template rendered with their values and the page's."""
    context = page_context(visitor, flow_slug, flow_name, page_url, variables)
    return await asyncio.to_thread(render_bounded, body, context)
