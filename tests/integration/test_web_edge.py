"""The web edge refuses what would leak real ids or cost a 500: sdk-assets, NUL bytes, request limits."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from server.conversations.page_token import issue_page_token
from server.security.signing import Signer
from server.settings import Settings
from tests import factories
from tests.support import ServerThread, with_database


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
