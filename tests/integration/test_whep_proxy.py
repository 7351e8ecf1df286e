"""The WHEP proxy forwards only to URLs upstream handed out, on allowed hosts; everything else is refused.

The upstream here is a deliberately small WHEP endpoint on loopback (echo, redirect, hang), enough to watch
what the proxy does with each answer; the full media path runs against the simulator.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from server.app import create_app
from server.conversations import lifecycle
from server.relay.whep import whep_proxy_path
from server.security.signing import PAGE_SESSION, WHEP_TARGET, Signer
from server.settings import Settings
from tests import factories
from tests.support import ServerThread, free_port, prepared_settings, with_database

SDP_OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
received: list[tuple[str, str, bytes]] = []


async def whep(request: Request) -> Response:
    body = await request.body()
    received.append((request.method, request.url.path, body))
    if request.url.path.endswith("/redirect"):
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=307)
    if request.url.path.endswith("/hang"):
        await request.receive()  # nothing until the proxy gives up and hangs up (the body is read)
    if request.method == "DELETE":
        return Response(status_code=200)
    return PlainTextResponse(
        "v=0\r\nanswer\r\n",
        status_code=201,
        media_type="application/sdp",
        headers={"location": "/rtc/v1/whep/resource/r1"},
    )


UPSTREAM = Starlette(routes=[Route("/{path:path}", whep, methods=["POST", "PATCH", "DELETE"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerThread]:
    with ServerThread(UPSTREAM) as server:
        yield server


@pytest.fixture
def proxy(tmp_path: Path, upstream: ServerThread) -> Iterator[tuple[ServerThread, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=upstream.url, whep_timeout_seconds=1.0)
    with ServerThread(create_app(settings)) as server:
        yield server, settings


def live_conversation(settings: Settings) -> str:
    """An active conversation, as the relay's join starts one: WHEP ids are bound to it."""
    signer = Signer(settings.secret)
    return with_database(settings, lambda db: factories.start_conversation(db, signer)).id


def offer(
    server: ServerThread, path: str, body: str = SDP_OFFER, kind: str = "application/sdp"
) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, headers={"content-type": kind})


def test_offer_reaches_the_handed_out_url_and_the_answer_comes_back(
    proxy: tuple[ServerThread, Settings], upstream: ServerThread
) -> None:
    server, settings = proxy
    path = whep_proxy_path(
        Signer(settings.secret), f"{upstream.url}/rtc/v1/whep/?app=app&stream=s1", live_conversation(settings)
    )
    received.clear()
    answer = offer(server, path)
    assert answer.status_code == 201 and answer.text == "v=0\r\nanswer\r\n"
    assert answer.headers["content-type"].startswith("application/sdp")
    assert received == [("POST", "/rtc/v1/whep/", SDP_OFFER.encode())]
    location = answer.headers["location"]
    assert location.startswith("/relay/whep/resource/") and upstream.url not in location
    assert httpx.delete(f"{server.url}{location}").status_code == 200
    assert received[-1][:2] == ("DELETE", "/rtc/v1/whep/resource/r1")


def test_unsigned_forged_or_foreign_tokens_are_unknown_targets(proxy: tuple[ServerThread, Settings]) -> None:
    server, settings = proxy
    assert offer(server, "/relay/whep/http%3A%2F%2F127.0.0.1%3A22").status_code == 404
    page_token = Signer(settings.secret).sign(PAGE_SESSION, {"u": "http://127.0.0.1:22/"}, 60)
    assert offer(server, f"/relay/whep/{page_token}").json()["code"] == "unknown_whep_target"
    other_secret = Signer(b"x" * 40).sign(WHEP_TARGET, {"u": "http://127.0.0.1:22/"}, 60)
    assert offer(server, f"/relay/whep/{other_secret}").status_code == 404


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:{port}/rtc/v1/whep/",
        "http://[::1]:{port}/rtc/v1/whep/",
        "file:///etc/passwd",
        "http://user@evil.example/rtc",
        "https://srs.avatar.us.kaltura.ai.evil.example/rtc",
    ],
)
def test_signed_urls_on_hosts_not_allowed_are_refused_without_a_request(
    proxy: tuple[ServerThread, Settings], target: str
) -> None:
    server, settings = proxy
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    watcher = threading.Thread(target=lambda: accepted.append(_accept(listener)))
    watcher.start()
    path = whep_proxy_path(Signer(settings.secret), target.format(port=port), live_conversation(settings))
    response = offer(server, path)
    watcher.join()
    listener.close()
    assert response.status_code == 403 and response.json()["code"] == "whep_host_not_allowed"
    assert accepted == [None]


def test_a_signed_url_that_is_not_a_valid_url_is_refused_not_a_server_error(
    proxy: tuple[ServerThread, Settings], upstream: ServerThread
) -> None:
    server, settings = proxy
    path = whep_proxy_path(Signer(settings.secret), "http://127.0.0.1:9170:5555/", "conversation")
    response = offer(server, path)
    assert response.status_code == 403 and response.json()["code"] == "whep_url_invalid"


def _accept(listener: socket.socket) -> object:
    try:
        return listener.accept()
    except TimeoutError:
        return None


def test_redirects_are_not_followed(proxy: tuple[ServerThread, Settings], upstream: ServerThread) -> None:
    server, settings = proxy
    conversation_id = live_conversation(settings)
    path = whep_proxy_path(Signer(settings.secret), f"{upstream.url}/rtc/redirect", conversation_id)
    response = offer(server, path)
    assert response.status_code == 502 and response.json()["code"] == "whep_redirect_refused"


def test_a_hanging_upstream_times_out_with_a_reason(
    proxy: tuple[ServerThread, Settings], upstream: ServerThread
) -> None:
    server, settings = proxy
    conversation_id = live_conversation(settings)
    path = whep_proxy_path(Signer(settings.secret), f"{upstream.url}/rtc/hang", conversation_id)
    response = offer(server, path)
    assert response.status_code == 504 and "did not answer within 1 s" in response.json()["message"]


def test_unreachable_upstream_is_a_clear_502(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = prepared_settings(tmp_path, simulator_url=dead)
    path = whep_proxy_path(Signer(settings.secret), f"{dead}/rtc", live_conversation(settings))
    with ServerThread(create_app(settings)) as server:
        response = offer(server, path)
    assert response.status_code == 502 and response.json()["code"] == "whep_unreachable"


def test_offer_must_be_sdp_and_bounded(proxy: tuple[ServerThread, Settings], upstream: ServerThread) -> None:
    server, settings = proxy
    conversation_id = live_conversation(settings)
    path = whep_proxy_path(Signer(settings.secret), f"{upstream.url}/rtc/v1/whep/", conversation_id)
    assert offer(server, path, kind="application/json").status_code == 415
    assert offer(server, path, body="a" * 70_000).status_code == 413


def test_whep_ids_die_with_their_conversation(
    proxy: tuple[ServerThread, Settings], upstream: ServerThread
) -> None:
    server, settings = proxy
    signer = Signer(settings.secret)
    ended, erased = live_conversation(settings), live_conversation(settings)
    ended_path = whep_proxy_path(signer, f"{upstream.url}/rtc/v1/whep/", ended)
    erased_path = whep_proxy_path(signer, f"{upstream.url}/rtc/v1/whep/", erased)
    answer = offer(server, ended_path)
    assert answer.status_code == 201
    resource = answer.headers["location"]
    received.clear()
    with_database(settings, lambda db: factories.age_conversation(db, ended, ended_at=datetime.now(UTC)))
    with_database(settings, lambda db: lifecycle.erase(db, erased))
    refused = offer(server, ended_path)
    assert refused.status_code == 409 and refused.json()["code"] == "conversation_ended"
    assert httpx.delete(f"{server.url}{resource}").status_code == 409
    assert offer(server, erased_path).status_code == 404
    assert received == []  # nothing reached the upstream
