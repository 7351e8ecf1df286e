"""The browser leg's direct WebSocket mode (server/relay/engineio_server.py, browser_websocket.py): a socket
that opens with long-polling and upgrades, as the SDK's does, keeps every packet in order both ways while
packets cross the upgrade, and then runs on the direct path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from server.app import create_app
from server.relay.sockets import RelayHub
from tests.integration.test_relay import SDK_QUERY, connected, page_session, websocket_upstream
from tests.support import ServerThread, eventually_async, prepared_settings

COUNT = 200


async def test_packets_keep_their_order_across_the_upgrade_and_then_go_direct(tmp_path: Path) -> None:
    heard: list[int] = []

    async def answer_each(ws: ServerConnection) -> None:
        await ws.send('42["onServerConnected",{}]')
        async for message in ws:
            assert isinstance(message, str)
            if message.startswith('42["onTextEntered"'):
                n = int(json.loads(message[2:])[1]["text"])
                heard.append(n)
                await ws.send('42["availabilityResult",' + json.dumps({"n": n}) + "]")

    async with websocket_upstream(answer_each) as url:
        settings = prepared_settings(tmp_path, simulator_url=url, relay_events_per_second=10_000)
        app = create_app(settings)
        hub: RelayHub = app.state.relay
        with ServerThread(app) as server:
            sdk = await connected(server)  # long-polling first; the upgrade runs while these go out
            for n in range(COUNT):
                await sdk.client.emit("onTextEntered", {"text": str(n)})
            await sdk.wait_for("availabilityResult", count=COUNT, timeout=15)
            answers = [data["n"] for name, data in sdk.events if name == "availabilityResult"]
            assert heard == list(range(COUNT))
            assert answers == list(range(COUNT))
            assert sdk.client.transport() == "websocket"
            sockets = hub.sio.eio.sockets
            assert [s.upgraded and s.queue.session is not None for s in sockets.values()] == [True]
            await sdk.client.disconnect()
            await eventually_async(lambda: len(hub.bridges), lambda n: n == 0, what="bridges closed")
            await eventually_async(lambda: len(sockets), lambda n: n == 0, what="browser sockets closed")


async def test_a_browser_that_stops_answering_pings_is_dropped_and_its_upstream_closed(
    tmp_path: Path,
) -> None:
    async def quiet(ws: ServerConnection) -> None:
        await ws.send('42["onServerConnected",{}]')

    async with websocket_upstream(quiet) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        hub: RelayHub = app.state.relay
        hub.sio.eio.ping_interval, hub.sio.eio.ping_timeout = 0.3, 0.3  # 25 s and 20 s in service
        with ServerThread(app) as server:
            _, token = page_session(server)
            query = httpx.QueryParams(
                {"client": token, "flowId": "demo", "stickyId": "a" * 16, **SDK_QUERY, "EIO": "4"}
            )
            url = f"ws://127.0.0.1:{server.port}/socket.io/?{query}&transport=websocket"
            async with connect(url) as ws:  # a raw Engine.IO client that never answers a ping
                assert str(await ws.recv()).startswith("0")
                await ws.send("40")
                heard: list[str] = []
                async with asyncio.timeout(5):  # the relay closes the WebSocket well before this
                    async for message in ws:
                        heard.append(str(message))
                assert "2" in heard  # pinged, and dropped for not answering
            await eventually_async(lambda: hub.open_upstreams, lambda n: n == 0, what="upstream closed")
            await eventually_async(lambda: len(hub.sio.eio.sockets), lambda n: n == 0, what="socket gone")
            assert not hub.bridges
