"""The web edge refuses what would leak real ids or cost a 500: sdk-assets, NUL bytes, request limits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.conversations.page_token import issue_page_token
from server.security.signing import Signer
from server.settings import Settings
from tests import factories
from tests.support import (
    ServerThread,
    make_settings,
    migrated_postgres_database,
    run_async,
    seed_demo,
    with_database,
)


def assets_path(token: str, slug: str) -> str:
    return f"/relay/iframe/clients/{token}/flow/{slug}/sdk-assets"


def test_sdk_assets_are_refused_for_a_socket_flow(live_server: ServerThread, settings: Settings) -> None:
    _, token = issue_page_token(Signer(settings.secret), "demo", None, {}, "http://127.0.0.1/a/demo", 600)
    response = httpx.get(live_server.url + assets_path(token, "demo"))
    assert response.status_code == 404 and response.json()["code"] == "not_an_iframe_flow"
    assert "demo-client" not in response.text and "demo-flow" not in response.text


def test_sdk_assets_are_refused_once_the_conversation_ended(
    live_server: ServerThread, settings: Settings
) -> None:
    signer = Signer(settings.secret)
    started = with_database(settings, lambda db: factories.start_conversation(db, signer, "demo-iframe"))
    with_database(
        settings,
        lambda db: factories.age_conversation(db, started.id, ended_at=datetime.now(UTC)),
    )
    response = httpx.get(live_server.url + assets_path(started.token, "demo-iframe"))
    assert response.status_code == 409 and response.json()["code"] == "conversation_ended"
    assert "demo-client" not in response.text


def test_a_chunked_body_over_the_limit_is_413(live_server: ServerThread, settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting what arrives can catch it
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    response = httpx.post(
        f"{live_server.url}/api/v1/page/transcript",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "target",
    [
        "/a/de%00mo",
        "/api/v1/sessions?flow=%00",
        "/relay/iframe/clients/x%00/flow/demo/sdk-assets",
        "/a/demo?x=%00",
    ],
)
def test_a_nul_byte_in_path_or_query_is_a_400(live_server: ServerThread, target: str) -> None:
    response = httpx.get(live_server.url + target)
    assert response.status_code == 400 and response.json()["code"] == "nul_in_request"


@pytest.mark.postgres
def test_a_nul_byte_is_a_400_on_postgres_too(tmp_path: Path) -> None:
    """PostgreSQL refuses a NUL in a text parameter mid-query: without the edge check these were 500s."""
    with migrated_postgres_database() as url:
        settings = make_settings(tmp_path, database_url=url)
        run_async(lambda: seed_demo(settings))
        api_token = with_database(settings, lambda db: factories.create_api_token(db, "transcripts:read"))
        with ServerThread(create_app(settings)) as server:
            page = httpx.get(f"{server.url}/a/de%00mo")
            listing = httpx.get(
                f"{server.url}/api/v1/sessions?flow=%00", headers={"authorization": f"Bearer {api_token}"}
            )
            assert httpx.get(f"{server.url}/a/demo").status_code == 200
    assert (page.status_code, page.json()["code"]) == (400, "nul_in_request")
    assert (listing.status_code, listing.json()["code"]) == (400, "nul_in_request")


SLOW_FOR_VISITORS = "{% for a in range(N) %}{% for b in range(N) %}{% endfor %}{% endfor %}".replace(
    "N", "visitor.n|default(0)|int"
)


def test_a_slow_dpp_template_fails_in_time_and_the_server_keeps_answering(
    live_server: ServerThread, settings: Settings
) -> None:
    body = {"x": SLOW_FOR_VISITORS}  # fast with no visitor values
    # An iframe page renders the DPP (a socket page leaves it to the conversation's start).
    with_database(
        settings,
        lambda db: factories.create_flow(
            db, "slow", template_body=body, sdk_mode="iframe", upstream="simulator"
        ),
    )
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        page = pool.submit(httpx.get, f"{live_server.url}/a/slow?n=99999", timeout=30)
        time.sleep(0.2)
        health = httpx.get(f"{live_server.url}/healthz", timeout=30)
        health_took = time.monotonic() - started - 0.2
        answer = page.result()
    took = time.monotonic() - started
    assert answer.status_code == 503 and "longer than" in answer.text
    assert took < 5  # unbounded before: ~2.4 s per thousand inner loops squared, here minutes
    assert health.status_code == 200 and health_took < 0.5  # the event loop was not held
