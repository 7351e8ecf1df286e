"""Every state-changing console route, enumerated from the app itself (a new route cannot escape these):
CSRF refused when missing, wrong or another session's; viewers refused; nobody signed in refused."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from server.admin.console import PUBLIC_PATHS, READ_ONLY_POSTS
from server.app import create_app
from server.security.headers import ADMIN_PREFIX
from tests.admin.console_client import ConsoleClient
from tests.support import ServerThread, make_settings


def _api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute with its full path, through included routers (FastAPI includes them lazily)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes, prefix + route.include_context.prefix)


def _state_changing_routes() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as data_dir:  # at collection: no test's tmp_path exists yet
        app = create_app(make_settings(Path(data_dir)))
    found: list[tuple[str, str]] = []
    for path, route in _api_routes(app.routes):
        if path.startswith(ADMIN_PREFIX):
            found.extend((method, path) for method in sorted((route.methods or set()) - {"GET", "HEAD"}))
    return sorted(set(found))


ROUTES = _state_changing_routes()


def _concrete(path: str) -> str:
    """A request path for a route pattern: the checks run before the route looks at its parameters."""
    return re.sub(r"\{[^}]+\}", "demo", path)


def test_the_enumeration_sees_the_console() -> None:
    assert ("POST", "/admin/sign-out") in ROUTES
    assert len(ROUTES) >= 2


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] not in PUBLIC_PATHS])
def test_csrf_is_required_on_every_state_changing_route(
    admin: ConsoleClient, viewer: ConsoleClient, method: str, path: str
) -> None:
    url = _concrete(path)
    missing = admin.http.request(method, url, data={}, headers={"accept": "text/html"})
    wrong = admin.http.request(method, url, data={"csrf_token": "x" * 43}, headers={"accept": "text/html"})
    other = admin.http.request(method, url, data={"csrf_token": viewer.csrf_token})
    header_wrong = admin.http.request(method, url, headers={"x-csrf-token": viewer.csrf_token})
    for answer in (missing, wrong, other, header_wrong):
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:200])
    assert "expired or came from another page" in missing.text
    assert admin.get("/admin").status_code == 200  # still signed in: nothing happened


@pytest.mark.parametrize(
    ("method", "path"), [r for r in ROUTES if r[1] not in PUBLIC_PATHS and r[1] not in READ_ONLY_POSTS]
)
def test_a_viewer_is_refused_on_every_state_changing_route(
    viewer: ConsoleClient, method: str, path: str
) -> None:
    answer = viewer.http.request(method, _concrete(path), data={"csrf_token": viewer.csrf_token})
    assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:200])
    assert "viewer" in answer.text


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] not in PUBLIC_PATHS])
def test_nobody_signed_in_is_refused_on_every_state_changing_route(
    console: ServerThread, method: str, path: str
) -> None:
    answer = httpx.request(method, f"{console.url}{_concrete(path)}", data={"csrf_token": "x"})
    assert answer.status_code == 401, (method, path, answer.status_code)
