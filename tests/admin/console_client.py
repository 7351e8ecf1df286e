"""A browser-like client of the admin console over real HTTP: cookies, CSRF tokens from the pages, forms."""

from __future__ import annotations

import re
from typing import Any

import httpx

from server import admins
from server.settings import Settings
from tests.support import with_database

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def create_admin(settings: Settings, email: str, role: str = "admin", password: str = PASSWORD) -> str:
    return with_database(settings, lambda db: admins.create_admin(db, email, password, role))


class ConsoleClient:
    """Signs in through the sign-in form, then reads pages and posts forms with the page's CSRF token."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=20)
        self.csrf_token = ""

    def __enter__(self) -> ConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        form = self.http.get("/admin/sign-in")
        found = _FORM_TOKEN.search(form.text)
        assert found, form.text
        answer = self.http.post(
            "/admin/sign-in", data={"email": email, "password": password, "form_token": found.group(1)}
        )
        if answer.status_code == 303:
            self.get("/admin")  # picks up the session's CSRF token
        return answer

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        answer = self.http.get(path, **kwargs)
        found = _CSRF.search(answer.text)
        if found:
            self.csrf_token = found.group(1)
        return answer

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post carrying this session's CSRF token (unless `data` brings its own)."""
        return self.http.post(path, data={"csrf_token": self.csrf_token, **(data or {})}, **kwargs)
