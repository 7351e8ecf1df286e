"""Signing in and out: cookies, fixation, throttling, CSRF on the form, and sessions that end."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import httpx

from server import admins
from server.db import Database
from server.models import AdminSession, utcnow
from server.settings import Settings
from tests.admin.console_client import PASSWORD, ConsoleClient, create_admin
from tests.support import ServerThread, with_database


def test_pages_send_a_browser_without_a_session_to_sign_in(console: ServerThread) -> None:
    answer = httpx.get(f"{console.url}/admin?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sign-in?next=/admin%3Fx%3D1"
    form = httpx.get(f"{console.url}/admin/sign-in")
    assert form.status_code == 200 and "frame-ancestors 'none'" in form.headers["content-security-policy"]
    assert form.headers["cache-control"] == "no-store"


def test_signing_in_sets_a_strict_http_only_cookie_and_signing_out_ends_the_session(
    admin: ConsoleClient,
) -> None:
    cookie = admin.http.cookies.get("abff_admin")
    assert cookie
    page = admin.get("/admin")
    assert page.status_code == 200 and "admin@example.com" in page.text
    answer = admin.post("/admin/sign-out")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/sign-in"
    # The old cookie, presented again, no longer opens anything.
    replay = httpx.get(
        str(admin.http.base_url.join("/admin")), cookies={"abff_admin": cookie}, follow_redirects=False
    )
    assert replay.status_code == 303 and replay.headers["location"].startswith("/admin/sign-in")


def test_the_session_cookie_is_http_only_strict_and_scoped(
    console: ServerThread, console_settings: Settings
) -> None:
    create_admin(console_settings, "ops@example.com")
    with ConsoleClient(console.url) as client:
        form = client.http.get("/admin/sign-in")
        token = re.search(r'name="form_token" value="([^"]+)"', form.text)
        assert token
        answer = client.http.post(
            "/admin/sign-in",
            data={"email": "ops@example.com", "password": PASSWORD, "form_token": token.group(1)},
        )
    header = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("abff_admin="))
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/admin" in header


def test_a_session_id_planted_before_sign_in_is_not_the_one_signed_in(
    console: ServerThread, console_settings: Settings
) -> None:
    create_admin(console_settings, "ops@example.com")
    create_admin(console_settings, "mallory@example.com")
    with ConsoleClient(console.url) as attacker, ConsoleClient(console.url) as victim:
        assert attacker.sign_in("mallory@example.com").status_code == 303
        planted = attacker.http.cookies.get("abff_admin")
        assert planted
        form = victim.http.get("/admin/sign-in")
        token = re.search(r'name="form_token" value="([^"]+)"', form.text)
        assert token
        victim.http.cookies.set("abff_admin", planted, domain="127.0.0.1", path="/admin")
        answer = victim.http.post(
            "/admin/sign-in",
            data={"email": "ops@example.com", "password": PASSWORD, "form_token": token.group(1)},
        )
        assert answer.status_code == 303
        issued = answer.cookies.get("abff_admin")
        assert issued and issued != planted
        # Signing in over a presented session ends it: the planted id opens nothing now.
        again = attacker.http.get("/admin", follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"].startswith("/admin/sign-in")


def test_wrong_password_and_unknown_email_get_the_same_answer(
    console: ServerThread, console_settings: Settings
) -> None:
    create_admin(console_settings, "ops@example.com")
    with ConsoleClient(console.url) as client:
        wrong = client.sign_in("ops@example.com", "not the password at all")
        unknown = client.sign_in("nobody@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert (
        "The email or password is wrong." in wrong.text and "The email or password is wrong." in unknown.text
    )
    assert 'value="ops@example.com"' in wrong.text  # the email typed is kept
    assert not wrong.cookies.get("abff_admin")


def test_repeated_failures_are_throttled_per_account(tmp_path: object, console_settings: Settings) -> None:
    from server.app import create_app

    settings = console_settings.model_copy(update={"sign_in_attempts_per_account": 2})
    create_admin(settings, "ops@example.com")
    with ServerThread(create_app(settings)) as server, ConsoleClient(server.url) as client:
        assert client.sign_in("ops@example.com", "wrong password one").status_code == 401
        assert client.sign_in("ops@example.com", "wrong password two").status_code == 401
        throttled = client.sign_in("ops@example.com", PASSWORD)  # even the right password waits
        assert throttled.status_code == 429 and "Too many sign-in attempts" in throttled.text
        other = client.sign_in(
            "OPS@example.com ", "wrong password three"
        )  # the same account, spelt otherwise
        assert other.status_code == 429


def test_the_sign_in_form_needs_its_own_token(console: ServerThread, console_settings: Settings) -> None:
    create_admin(console_settings, "ops@example.com")
    answer = httpx.post(
        f"{console.url}/admin/sign-in",
        data={"email": "ops@example.com", "password": PASSWORD, "form_token": "forged"},
        headers={"accept": "text/html"},
    )
    assert answer.status_code == 403 and "expired" in answer.text
    assert "abff_admin" not in answer.headers.get("set-cookie", "")


def test_next_only_leads_inside_the_console(console: ServerThread, console_settings: Settings) -> None:
    create_admin(console_settings, "ops@example.com")
    with ConsoleClient(console.url) as client:
        form = client.http.get("/admin/sign-in", params={"next": "//evil.example/admin"})
        token = re.search(r'name="form_token" value="([^"]+)"', form.text)
        assert token and 'name="next" value="/admin"' in form.text
        answer = client.http.post(
            "/admin/sign-in",
            data={
                "email": "ops@example.com",
                "password": PASSWORD,
                "form_token": token.group(1),
                "next": "https://evil.example/",
            },
        )
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"


def test_sessions_end_when_idle_or_too_old(console_settings: Settings) -> None:
    create_admin(console_settings, "ops@example.com")
    idle, lifetime = timedelta(minutes=30), timedelta(hours=12)

    async def age(db: Database, secret: str, seen_ago: timedelta, created_ago: timedelta) -> None:
        async with db.transaction() as session:
            row = await session.get(AdminSession, hashlib.sha256(secret.encode()).hexdigest())
            assert row is not None
            row.last_seen_at, row.created_at = utcnow() - seen_ago, utcnow() - created_ago

    async def scenario(db: Database) -> tuple[list[bool], int]:
        admin_id = await admins.check_password(db, "ops@example.com", PASSWORD)
        assert admin_id is not None
        fresh, stale, old, unseen = [await admins.start_session(db, admin_id) for _ in range(4)]
        await age(db, stale, idle * 2, idle * 2)
        await age(db, old, timedelta(0), lifetime * 2)
        await age(db, unseen, idle * 2, idle * 2)
        alive = [await admins.session_of(db, s, idle, lifetime) is not None for s in (fresh, stale, old)]
        return alive, await admins.purge_sessions(db, idle, lifetime)  # housekeeping forgets `unseen`

    assert with_database(console_settings, scenario) == ([True, False, False], 1)
