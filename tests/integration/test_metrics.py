"""GET /metrics after real traffic: a conversation relayed to the simulator, page ingest, WHEP, refusals."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import socketio
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.models import utcnow
from server.relay.whep import whep_proxy_path
from server.security.signing import Signer
from server.settings import Settings
from tests import factories
from tests.integration.test_relay import FakeSdk, no_upstream_left, page_session, refused
from tests.integration.test_whep_proxy import UPSTREAM, live_conversation, offer
from tests.support import ServerThread, database, eventually_async, prepared_settings

TOKEN = "metrics-" + "t" * 40
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def watched(tmp_path: Path, simulator: ServerThread) -> Iterator[tuple[ServerThread, FastAPI, Settings]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, metrics_token=TOKEN)
    app = create_app(settings)
    with ServerThread(app) as server:
        yield server, app, settings


def scrape(server: ServerThread) -> Samples:
    response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"avatar_bff_{name}", frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_a_relayed_conversation_moves_each_counter_by_what_happened(
    watched: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, _ = watched
    before = scrape(server)
    _, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    await sdk.wait_for("showAgent")
    live = scrape(server)
    assert value(live, "relay_sessions", flow="demo") == 1
    await sdk.client.emit("approvedPermissions", {})
    await sdk.wait_for("stvFinishedTalking")
    await sdk.client.emit("__proto__", {"x": 1})  # not an SDK event: dropped, never relayed
    await sdk.client.emit("onTextEntered", {"isFinal": True, "text": "show me a table"})
    await sdk.wait_for("stvFinishedTalking", count=2)
    await sdk.client.emit("onTextEntered", {"isFinal": True, "text": "bye"})
    await sdk.wait_for("conversationEnded")
    hub = app.state.relay
    await eventually_async(lambda: hub.tap.stored, lambda n: n >= 5, what="relay lines stored")
    await sdk.client.disconnect()
    await no_upstream_left(app)
    after = scrape(server)

    assert value(after, "relay_sessions", flow="demo") == 0
    assert moved(before, after, "relay_events_total", direction="to_browser", event="stvFinishedTalking") == 3
    assert moved(before, after, "relay_events_total", direction="to_browser", event="showAgent") == 1
    assert moved(before, after, "relay_events_total", direction="to_browser", event="conversationEnded") == 1
    assert moved(before, after, "relay_events_total", direction="to_upstream", event="onTextEntered") == 2
    assert (
        moved(before, after, "relay_events_total", direction="to_upstream", event="approvedPermissions") == 1
    )
    assert moved(before, after, "relay_events_total", direction="to_upstream", event="join") == 1
    relayed_down = sum(
        count - before.get(key, 0.0)
        for key, count in after.items()
        if key[0] == "avatar_bff_relay_events_total" and ("direction", "to_browser") in key[1]
    )
    assert relayed_down == len(sdk.events)  # every event the SDK heard, and nothing else
    assert moved(before, after, "relay_dropped_total", reason="disallowed") == 1
    assert moved(before, after, "upstream_connect_seconds_count") == 1
    assert 0 < moved(before, after, "upstream_connect_seconds_sum") < 2
    assert moved(before, after, "transcript_lines_stored_total", source="relay") == 5
    page_views = moved(
        before,
        after,
        "http_request_duration_seconds_count",
        route="/a/{slug}",
        method="GET",
        status_class="2xx",
    )
    assert page_views == 1


async def test_page_ingest_counts_stored_and_refused_lines(
    watched: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, _, settings = watched
    conversation_id, token = page_session(server)
    before = scrape(server)
    lines = [
        {"seq": seq, "role": "User", "text": f"line {seq}", "timestamp": "2026-01-01T00:00:00Z"}
        for seq in (1, 2, 3)
    ]
    answer = httpx.post(f"{server.url}/api/v1/page/transcript", json={"token": token, "entries": lines})
    assert answer.json()["stored"] == 3
    ended = {"token": token, "entries": [], "final": True}
    assert httpx.post(f"{server.url}/api/v1/page/transcript", json=ended).status_code == 200
    async with database(settings) as db:  # ended long enough ago for late lines to be refused
        await factories.age_conversation(db, conversation_id, ended_at=utcnow() - timedelta(minutes=3))
    late = [{**lines[0], "seq": 4}, {**lines[0], "seq": 5}]
    refused_batch = httpx.post(f"{server.url}/api/v1/page/transcript", json={"token": token, "entries": late})
    assert refused_batch.status_code == 409
    after = scrape(server)
    assert moved(before, after, "transcript_lines_stored_total", source="page") == 3
    assert moved(before, after, "transcript_lines_dropped_total", source="page", reason="session_ended") == 2
    route = "/api/v1/page/transcript"
    assert (
        moved(
            before,
            after,
            "http_request_duration_seconds_count",
            route=route,
            method="POST",
            status_class="2xx",
        )
        == 2
    )
    assert (
        moved(
            before,
            after,
            "http_request_duration_seconds_count",
            route=route,
            method="POST",
            status_class="4xx",
        )
        == 1
    )


def test_whep_latency_is_counted_by_method_and_outcome(tmp_path: Path) -> None:
    with ServerThread(UPSTREAM) as upstream:
        settings = prepared_settings(
            tmp_path, simulator_url=upstream.url, whep_timeout_seconds=0.5, metrics_token=TOKEN
        )
        with ServerThread(create_app(settings)) as server:
            conversation_id = live_conversation(settings)
            signer = Signer(settings.secret)
            before = scrape(server)
            answer = offer(server, whep_proxy_path(signer, f"{upstream.url}/rtc/v1/whep/", conversation_id))
            assert answer.status_code == 201
            assert httpx.delete(f"{server.url}{answer.headers['location']}").status_code == 200
            hung = offer(server, whep_proxy_path(signer, f"{upstream.url}/rtc/v1/whep/hang", conversation_id))
            assert hung.status_code == 504
            after = scrape(server)
    assert moved(before, after, "whep_seconds_count", method="POST", outcome="2xx") == 1
    assert moved(before, after, "whep_seconds_count", method="DELETE", outcome="2xx") == 1
    assert moved(before, after, "whep_seconds_count", method="POST", outcome="timeout") == 1
    assert moved(before, after, "whep_seconds_sum", method="POST", outcome="timeout") >= 0.5


async def test_refusals_and_upstream_failures_are_counted_by_reason(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, metrics_token=TOKEN)  # the simulator URL: nothing listens there
    with ServerThread(create_app(settings)) as server:
        _, token = page_session(server)
        before = scrape(server)
        assert "unreachable" in await refused(server, token)
        assert "not valid" in await refused(server, token[:-4] + "AAAA")
        after = scrape(server)
    assert moved(before, after, "upstream_connect_failures_total", reason="upstream_failed") == 1
    assert moved(before, after, "relay_refusals_total", reason="upstream_failed") == 1
    assert (
        sum(after[key] - before.get(key, 0.0) for key in after if key[0] == "avatar_bff_relay_refusals_total")
        == 2
    )
    assert moved(before, after, "upstream_connect_seconds_count") == 0


async def test_a_flood_of_random_flow_slugs_and_paths_adds_no_series(
    watched: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, _, _ = watched
    _, token = page_session(server)

    async def flood(rounds: int) -> None:
        for _ in range(rounds):
            slug = "x" + secrets.token_hex(6)
            httpx.get(f"{server.url}/a/{slug}")  # no such flow: 404
            httpx.get(f"{server.url}/{slug}/{secrets.token_hex(4)}")  # no such route
            sdk = FakeSdk()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await sdk.connect(server.url, token, slug=slug)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await sdk.connect(server.url, secrets.token_urlsafe(24), slug=slug)

    await flood(1)  # the first refusal of each kind makes its series, as the first scrape makes its own
    scrape(server)
    series = set(scrape(server))
    await flood(25)
    after = scrape(server)
    assert set(after) == series


def test_metrics_are_off_without_a_token(tmp_path: Path) -> None:
    with ServerThread(create_app(prepared_settings(tmp_path))) as server:
        answer = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer anything"})
        assert answer.status_code == 404
        assert httpx.get(f"{server.url}/api/openapi.json").json()["paths"].get("/metrics") is None


def test_metrics_refuse_a_missing_or_wrong_token(watched: tuple[ServerThread, FastAPI, Settings]) -> None:
    server, _, _ = watched
    url = f"{server.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer " + TOKEN[:-1] + "u"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert httpx.get(url, params={"token": TOKEN}).status_code == 401
    assert "avatar_bff_relay_sessions" in httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).text


def test_a_metrics_token_must_be_long(tmp_path: Path) -> None:
    from server.settings import SettingsError
    from tests.support import make_settings

    with pytest.raises(SettingsError, match="AVATAR_BFF_METRICS_TOKEN"):
        make_settings(tmp_path, metrics_token="short")
