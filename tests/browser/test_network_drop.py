"""A network drop on a Socket SDK page: socket.io's own retry and the SDK's reconnect both come back.

When the connection drops mid-conversation the SDK abandons its socket and connects a new one (with a new
`stickyId`), but socket.io keeps retrying the abandoned socket, whose handlers are still attached. Here the
retry is held back until the SDK's new socket is in conversation, then let through: the worst order, made
certain. The visitor's conversation must not notice it (issue: SDK fidelity, defect 11).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Page, Route, WebSocketRoute, expect

from server.app import create_app
from server.settings import Settings
from tests.browser.conftest import PageWatch, record_sdk_events, recorded_sdk_events
from tests.support import ServerThread, eventually, prepared_settings, run_async, stored_transcript

SOCKET_IO = "**/socket.io/**"


def sticky_of(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("stickyId", [""])[0]


def wait_until(page: Page, condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Poll `condition` while Playwright runs: the sync API routes requests only while a test waits on it."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        page.wait_for_timeout(100)


class Network:
    """Every Socket.IO request and WebSocket of the page, which can be cut or held back by stickyId."""

    def __init__(self, page: Page) -> None:
        self.sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.held: set[str] = set()  # stickyIds whose requests fail, as if the network were still down
        self.seen: list[str] = []  # the stickyId of every request, in order
        page.route_web_socket(SOCKET_IO, self._socket)
        page.route(SOCKET_IO, self._request)

    def _socket(self, ws: WebSocketRoute) -> None:
        self.seen.append(sticky_of(ws.url))
        if sticky_of(ws.url) in self.held:
            ws.close(code=1006)
            return
        self.sockets.append((ws, ws.connect_to_server()))

    def _request(self, route: Route) -> None:
        self.seen.append(sticky_of(route.request.url))
        if sticky_of(route.request.url) in self.held:
            route.abort()
        else:
            route.continue_()

    def cut(self) -> None:
        """Both ends of every open WebSocket close, as when the network goes away."""
        for page_side, server_side in self.sockets:
            page_side.close()
            server_side.close()
        self.sockets.clear()


@pytest.fixture
def app_and_settings(
    tmp_path: Path, simulator: ServerThread
) -> Iterator[tuple[ServerThread, Settings, FastAPI]]:
    settings = prepared_settings(tmp_path, simulator_url=simulator.url)
    app = create_app(settings)
    with ServerThread(app) as running:
        yield running, settings, app


def test_a_retry_of_the_abandoned_socket_never_pushes_out_the_sdks_new_one(
    app_and_settings: tuple[ServerThread, Settings, FastAPI], simulator: ServerThread, watch: PageWatch
) -> None:
    running, settings, app = app_and_settings
    hub = app.state.relay
    page = watch.page
    network = Network(page)
    page.goto(f"{running.url}/a/demo?first_name=Ana")
    page.get_by_role("button", name="Start conversation").click()
    status = page.locator("#status")
    expect(status).to_contain_text("In conversation", timeout=30_000)
    abandoned = network.seen[-1]
    wait_until(page, lambda: network.sockets, "the upgrade to WebSocket")

    network.held.add(abandoned)  # socket.io's retries of the old socket fail for now
    network.cut()
    expect(status).to_contain_text("Reconnecting", timeout=15_000)
    expect(status).to_contain_text("In conversation", timeout=30_000)
    assert set(network.seen) - {abandoned}  # the SDK's own new socket

    record_sdk_events(page, ["error", "reconnecting", "disconnected"])
    retries = len(network.seen)
    network.held.clear()  # the network is back for the abandoned socket too: its next retry gets through
    # socket.io backs off up to 7.5 s between retries.
    wait_until(page, lambda: abandoned in network.seen[retries:], "socket.io's retry of the old socket")
    page.wait_for_timeout(2000)  # what the relay does with the retry has reached the page by now

    assert recorded_sdk_events(page) == []
    expect(status).to_contain_text("In conversation")
    assert len(hub.bridges) == 1
    page.get_by_label("Type a message").fill("show me a chart")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#transcript")).to_contain_text("Here is a chart.", timeout=30_000)

    live = [s for s in httpx.get(f"{simulator.url}/_sim/sessions").json() if not s["ended"]]
    assert len(live) == 1  # one upstream session holds the conversation
    conversation_id = next(iter(hub.bridges.values())).conversation_id
    lines = eventually(
        lambda: run_async(lambda: stored_transcript(settings, conversation_id)),
        lambda found: any("Here is a chart." in line.text for line in found),
        what="the reply in the stored transcript",
    )
    texts = [(line.role, line.text) for line in lines]
    assert len(texts) == len(set(texts)), texts  # nothing heard twice
