"""Hosted pages over real HTTP: content, security headers, sessions, and refusals that are not 500s."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import httpx
from sqlalchemy import select

from server.app import create_app
from server.models import Conversation
from server.settings import Settings
from tests import factories
from tests.support import ServerThread, db_session, eventually, make_settings, with_database


def page_config(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="avatar-config">(.*?)</script>', html, re.S)
    assert match, "page has no config element"
    config: dict[str, object] = json.loads(match.group(1))
    return config


def raw_status(port: int, target: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def csp_directives(header: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in header.split("; ")}


def test_socket_page_renders_with_strict_policy_and_nonce(live_server: ServerThread) -> None:
    response = httpx.get(f"{live_server.url}/a/demo")
    assert response.status_code == 200
    csp = csp_directives(response.headers["content-security-policy"])
    nonce = next(s for s in csp["script-src"] if s.startswith("'nonce-"))[7:-1]
    assert f'nonce="{nonce}"' in response.text
    assert csp["default-src"] == ["'none'"]
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'self'"]
    assert "'sha256-IH5Ndxg07H1Vllt57d6RnKYyzLDzYvq6kyFvy1zXTBU='" in csp["style-src"]
    for banned in ("'unsafe-inline'", "'unsafe-eval'", "'strict-dynamic'"):
        assert banned not in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert "microphone=(self)" in response.headers["permissions-policy"]
    assert "strict-transport-security" not in response.headers  # plain http
    assert "local simulator" in response.text
    assert "onclick" not in response.text and "style=" not in response.text


def test_each_request_gets_a_new_nonce(live_server: ServerThread) -> None:
    first = httpx.get(f"{live_server.url}/a/demo").headers["content-security-policy"]
    second = httpx.get(f"{live_server.url}/a/demo").headers["content-security-policy"]
    assert first != second


def test_cdn_sdk_url_is_the_only_third_party_script(live_server: ServerThread) -> None:
    csp = csp_directives(httpx.get(f"{live_server.url}/a/demo").headers["content-security-policy"])
    third_party = [s for s in csp["script-src"] if s.startswith("https://")]
    assert third_party == [
        "https://cdn.jsdelivr.net/gh/kaltura/conversational-avatar-embed-sdk@v2.7.4/sdk-socket/dist/kaltura-avatar-sdk.js"
    ]


def test_self_hosted_sdk_removes_the_cdn_from_the_policy(
    live_server: ServerThread, settings: Settings
) -> None:
    target = settings.sdk_dir / "v2.7.4" / "socket-kaltura-avatar-sdk.js"
    target.parent.mkdir(parents=True)
    target.write_text("// stand-in; the browser tests use the real file")
    response = httpx.get(f"{live_server.url}/a/demo")
    assert "cdn.jsdelivr.net" not in response.headers["content-security-policy"]
    assert 'src="/static/sdk/v2.7.4/socket-kaltura-avatar-sdk.js"' in response.text
    served = httpx.get(f"{live_server.url}/static/sdk/v2.7.4/socket-kaltura-avatar-sdk.js")
    assert served.headers["content-type"].endswith("charset=utf-8")  # the SDK fails to parse without it


def test_iframe_page_allows_only_the_meeting_frame(live_server: ServerThread, settings: Settings) -> None:
    response = httpx.get(f"{live_server.url}/a/demo-iframe")
    assert response.status_code == 200
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["frame-src"] == [settings.simulator_url]
    assert f'microphone=(self "{settings.simulator_url}")' in response.headers["permissions-policy"]
    assert page_config(response.text)["mode"] == "iframe"


def stored_conversations(settings: Settings) -> list[Conversation]:
    async def read() -> list[Conversation]:
        async with db_session(settings) as db:
            return list((await db.execute(select(Conversation))).scalars())

    return asyncio.run(read())


def test_page_renders_dpp_from_visitor_context_and_stores_nothing(
    live_server: ServerThread, settings: Settings
) -> None:
    # The iframe page carries the DPP (the Iframe SDK takes it from the page); the socket page never does.
    assert "dpp" not in page_config(httpx.get(f"{live_server.url}/a/demo", params={"first_name": "Ana"}).text)
    response = httpx.get(f"{live_server.url}/a/demo-iframe", params={"first_name": 'Ana "</script>'})
    config = page_config(response.text)
    dpp = config["dpp"]
    assert isinstance(dpp, dict) and dpp["user"]["first_name"] == 'Ana "</script>'
    assert '</script>"' not in response.text.split('id="avatar-config">')[1].split("</script>")[0]
    session_info = config["session"]
    assert isinstance(session_info, dict) and session_info["token"] and session_info["id"]
    assert stored_conversations(settings) == []


def test_a_hundred_page_views_store_nothing_and_a_conversation_stores_one(
    live_server: ServerThread, settings: Settings
) -> None:
    with httpx.Client(base_url=live_server.url) as client:
        configs = [page_config(client.get("/a/demo?first_name=Ana").text) for _ in range(100)]
    assert len({c["session"]["id"] for c in configs}) == 100  # type: ignore[index]
    assert stored_conversations(settings) == []

    token = configs[-1]["session"]["token"]  # type: ignore[index]
    for seq in (1, 2):
        line = {"seq": seq, "role": "Avatar", "text": f"line {seq}", "timestamp": "2026-01-01T00:00:00Z"}
        answer = httpx.post(
            f"{live_server.url}/api/v1/page/transcript", json={"token": token, "entries": [line]}
        )
        assert answer.status_code == 200, answer.text
    (conversation,) = stored_conversations(settings)
    assert conversation.id == configs[-1]["session"]["id"]  # type: ignore[index]
    assert conversation.status == "active"
    assert conversation.visitor_context == {"first_name": "Ana"}
    assert conversation.rendered_dpp["user"] == {"first_name": "Ana"}


def test_unknown_slug_is_a_404_page_not_a_trace(live_server: ServerThread) -> None:
    response = httpx.get(f"{live_server.url}/a/no-such-flow", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert "There is no avatar page at this address." in response.text
    assert "Traceback" not in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_disabled_flow_is_a_404(live_server: ServerThread, settings: Settings) -> None:
    assert httpx.get(f"{live_server.url}/a/demo").status_code == 200
    with_database(settings, lambda db: factories.change_flow(db, "demo", enabled=False))
    # Within the time a page view trusts the flow it read (page_flow_cache_seconds).
    eventually(
        lambda: httpx.get(f"{live_server.url}/a/demo").status_code,
        lambda status: status == 404,
        timeout=settings.page_flow_cache_seconds + 5,
    )


def test_oversized_query_strings_are_refused_cleanly(live_server: ServerThread) -> None:
    medium = httpx.get(f"{live_server.url}/a/demo?x={'a' * 10_000}")
    assert medium.status_code == 414
    assert raw_status(live_server.port, f"/a/demo?x={'a' * 100_000}") in (400, 414)  # httpx refuses such URLs
    long_value = httpx.get(f"{live_server.url}/a/demo", params={"first_name": "a" * 300})
    assert long_value.status_code == 400
    # Each value is short enough, but together they would not fit in the page's token.
    many = httpx.get(f"{live_server.url}/a/demo", params={f"field_{n}": "a" * 150 for n in range(15)})
    assert many.status_code == 400 and "visitor values exceed" in many.text
    assert "first_name" in long_value.text


def test_health_and_readiness(live_server: ServerThread) -> None:
    assert httpx.get(f"{live_server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readiness_fails_with_a_reason_before_migrations(tmp_path: Path) -> None:
    with ServerThread(create_app(make_settings(tmp_path))) as server:
        response = httpx.get(f"{server.url}/readyz")
    assert response.status_code == 503
    assert "migrations not applied" in response.json()["reason"]
