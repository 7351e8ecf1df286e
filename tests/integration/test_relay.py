"""The Socket.IO relay against the simulator, with a real python-socketio client standing in for the SDK."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from sqlalchemy import select
from websockets.asyncio.server import ServerConnection, serve

from server import budgets
from server.app import create_app
from server.models import Conversation
from server.relay.sockets import RelayHub
from server.relay.upstream import tls_context
from server.security.signing import PAGE_SESSION, Signer
from server.settings import Settings
from server.simulator import SimulatorConfig
from server.simulator import create_app as create_simulator
from tests.factories import change_flow
from tests.support import (
    ServerThread,
    database,
    db_session,
    eventually_async,
    free_port,
    prepared_settings,
    stored_transcript,
)

SDK_QUERY = {
    "billed_client": "",
    "debugMode": "true",
    "ks": "",
    "level": "published",
}


def page_session(server: ServerThread, slug: str = "demo") -> tuple[str, str]:
    html = httpx.get(f"{server.url}/a/{slug}", params={"first_name": "Ana"}).text
    config = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])
    return config["session"]["id"], config["session"]["token"]


class FakeSdk:
    """Drives the protocol like the Socket SDK does, recording every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.seen = asyncio.Event()
        self.refusal = ""
        self.disconnected = asyncio.Event()
        self.client.on("*", self._record)
        self.client.on("connect_error", self._refused)
        self.client.on("disconnect", lambda *_: self.disconnected.set())

    async def _refused(self, data: Any = None) -> None:
        self.refusal = data.get("message", "") if isinstance(data, dict) else str(data)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if args else None))
        self.seen.set()
        replies = {
            "onServerConnected": [
                ("isValidSession", {"client": "TOKEN", "flowId": "demo", "room": "r1"}),
                ("join", {"client": "TOKEN", "room": "r1"}),
            ],
            "joinComplete": [("stvNewSession", {"client": "TOKEN", "room": "r1"})],
        }
        for name, payload in replies.get(event, []):
            await self.client.emit(name, payload)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 15) -> Any:
        async def until() -> Any:
            while True:
                matches = [data for name, data in self.events if name == event]
                if len(matches) >= count:
                    return matches[count - 1]
                self.seen.clear()
                await self.seen.wait()

        return await asyncio.wait_for(until(), timeout)

    async def connect(
        self, url: str, token: str, slug: str = "demo", sticky: str | None = None, **kwargs: Any
    ) -> None:
        """Like the SDK's `connect()`: a new stickyId each time (or `sticky`: an old socket's retry)."""
        self.sticky = sticky or secrets.token_hex(8)
        query = httpx.QueryParams({"client": token, "flowId": slug, "stickyId": self.sticky, **SDK_QUERY})
        await self.client.connect(f"{url}/?{query}", socketio_path="socket.io", **kwargs)


async def connected(server: ServerThread) -> FakeSdk:
    """A page's SDK connected through the relay."""
    _, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    return sdk


async def joined(server: ServerThread) -> FakeSdk:
    """A page's SDK connected through the relay, with the avatar shown."""
    sdk = await connected(server)
    await sdk.wait_for("showAgent")
    return sdk


def upstream_of(app: FastAPI, simulator: ServerThread, sdk: FakeSdk) -> dict[str, Any]:
    sid = app.state.relay.bridges[sdk.client.get_sid()].upstream.sid
    return next(s for s in httpx.get(f"{simulator.url}/_sim/sessions").json() if s["socket_sid"] == sid)


async def test_conversation_through_the_relay_uses_real_ids_upstream(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, settings = relay
    session_id, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    new_session = await sdk.wait_for("stvNewSession")
    assert new_session["webrtc_url"].startswith("/relay/whep/")
    await sdk.wait_for("showAgent")
    upstream_sid = app.state.relay.bridges[sdk.client.get_sid()].upstream.sid
    await sdk.client.emit("approvedPermissions", {})  # the relay injects the server's DPP just before it
    greeting = await sdk.wait_for("stvFinishedTalking")
    assert greeting["agentContent"].startswith("Hello Ana!")
    await sdk.client.emit("onTextEntered", {"isFinal": True, "text": "show me a table"})
    assert (await sdk.wait_for("agentTurnToTalk"))["userTranscription"] == "show me a table"
    assert "Plan" in (await sdk.wait_for("showVisualTable"))["mediaUrl"]
    await sdk.wait_for("stvFinishedTalking", count=2)
    await sdk.client.emit("onTextEntered", {"isFinal": True, "text": "bye"})
    closing = await sdk.wait_for("stvFinishedTalking", count=3)
    assert closing["agentContent"].endswith("Ending call now.")
    await sdk.wait_for("conversationEnded")

    upstream = next(
        s for s in httpx.get(f"{simulator.url}/_sim/sessions").json() if s["socket_sid"] == upstream_sid
    )
    assert upstream["dpp"]["user"] == {"first_name": "Ana"}
    assert (upstream["client_id"], upstream["flow_id"]) == ("demo-client", "demo-flow")
    incoming = [
        e for e in upstream["events"] if e["dir"] == "in" and e["event"] in ("isValidSession", "join")
    ]
    assert all(e["data"]["client"] == "demo-client" for e in incoming)
    assert upstream["query"]["stickyId"] == sdk.sticky

    # The tap writes in the background: conversationEnded ends the session, every line lands.
    await eventually_async(
        lambda: (
            httpx.post(f"{server.url}/api/v1/page/transcript", json={"token": token, "entries": []})
            .json()
            .get("status")
        ),
        lambda status: status == "ended",
        what="the session's status",
    )
    stored = await eventually_async(
        lambda: stored_transcript(settings, session_id), lambda found: len(found) >= 5, what="the transcript"
    )
    lines = [(e.role, e.text, e.sources) for e in stored]
    assert [role for role, _, _ in lines] == ["Avatar", "User", "Avatar", "User", "Avatar"]
    assert lines[1][1] == "show me a table" and all(sources == ("relay",) for _, _, sources in lines)
    async with db_session(settings) as db:  # the page view stored nothing, the conversation one row
        assert list((await db.execute(select(Conversation.id))).scalars()) == [session_id]
    await sdk.client.disconnect()
    await no_upstream_left(app)


def events_upstream_received(app: FastAPI, simulator: ServerThread, sdk: FakeSdk) -> list[dict[str, Any]]:
    return [e for e in upstream_of(app, simulator, sdk)["events"] if e["dir"] == "in"]


async def test_the_avatar_gets_the_servers_dpp_never_the_pages(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, settings = relay
    html = httpx.get(f"{server.url}/a/demo", params={"first_name": "Ana"}).text
    assert "questions" not in html and "Which of our features" not in html  # the operator's prompt
    session_id, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    await sdk.wait_for("showAgent")
    forged = {"user": {"first_name": "Mallory"}, "offer": "a staff discount"}
    await sdk.client.emit("setDynamicPrompt", {"message": json.dumps(forged)})
    await sdk.client.emit("approvedPermissions", {})
    greeting = await sdk.wait_for("stvFinishedTalking")
    assert greeting["agentContent"].startswith("Hello Ana!")
    prompts = [
        e["data"] for e in events_upstream_received(app, simulator, sdk) if e["event"] == "setDynamicPrompt"
    ]
    async with db_session(settings) as db:
        conversation = await db.get(Conversation, session_id)
        assert conversation is not None and conversation.page_contexts is None
        assert [json.loads(p["message"]) for p in prompts] == [conversation.rendered_dpp]
    assert app.state.relay.dropped["page_context"] == 1
    await sdk.client.disconnect()


async def test_a_flow_open_to_live_context_takes_it_from_the_page_within_limits_and_stores_it(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, settings = relay
    async with database(settings) as db:
        await change_flow(db, "demo", page_context={"max_bytes": 200, "per_minute": 2})
    session_id, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    await sdk.wait_for("showAgent")
    await sdk.client.emit("approvedPermissions", {})
    await sdk.wait_for("stvFinishedTalking")
    sent = [json.dumps({"code": f"print({n})"}) for n in range(3)]
    for message in [json.dumps({"code": "x" * 300}), *sent]:  # too big, then two allowed, then one too many
        await sdk.client.emit("setDynamicPrompt", {"message": message})
    await sdk.client.emit("pauseConversation", {})  # after the others: once it is upstream, they are too
    await eventually_async(
        lambda: events_upstream_received(app, simulator, sdk),
        lambda events: any(e["event"] == "pauseConversation" for e in events),
        what="what upstream received",
    )
    prompts = [e["data"]["message"] for e in events_upstream_received(app, simulator, sdk)
               if e["event"] == "setDynamicPrompt"]  # fmt: skip
    assert prompts[1:] == sent[:2] and json.loads(prompts[0])["user"] == {"first_name": "Ana"}
    async with db_session(settings) as db:
        conversation = await db.get(Conversation, session_id)
        assert conversation is not None and conversation.page_contexts is not None
        assert [entry["message"] for entry in conversation.page_contexts] == sent[:2]
    assert app.state.relay.dropped["page_context"] == 2
    await sdk.client.disconnect()


async def no_upstream_left(app: FastAPI) -> None:
    hub: RelayHub = app.state.relay
    await eventually_async(lambda: hub.open_upstreams, lambda n: n == 0, what="open upstreams")


async def refused(server: ServerThread, token: str, slug: str = "demo", **kwargs: Any) -> str:
    sdk = FakeSdk()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sdk.connect(server.url, token, slug, **kwargs)
    return sdk.refusal


async def test_forged_expired_and_foreign_flow_tokens_are_refused_with_a_reason(
    relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, settings = relay
    _, token = page_session(server)
    assert "not valid" in await refused(server, token[:-4] + "AAAA")
    expired = Signer(settings.secret).sign(PAGE_SESSION, {"sid": "x", "flow": "demo"}, 60, now=0)
    assert "expired" in await refused(server, expired)
    assert "another avatar" in await refused(server, token, slug="demo-iframe")
    assert app.state.relay.open_upstreams == 0


async def test_an_iframe_mode_flow_s_token_opens_no_relayed_session(
    relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    """Its meeting talks to the service from its frame: the relay is not a second way in for its token."""
    server, app, settings = relay
    conversation_id, token = page_session(server, "demo-iframe")
    assert "runs in a frame" in await refused(server, token, slug="demo-iframe")
    assert app.state.relay.open_upstreams == 0
    async with db_session(settings) as session:
        assert await session.get(Conversation, conversation_id) is None  # nothing started


async def test_foreign_origin_is_refused(relay: tuple[ServerThread, FastAPI, Settings]) -> None:
    server, app, _ = relay
    _, token = page_session(server)
    sdk = FakeSdk()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sdk.connect(server.url, token, headers={"Origin": "https://evil.example"})
    assert app.state.relay.open_upstreams == 0


async def test_ended_session_cannot_reconnect(relay: tuple[ServerThread, FastAPI, Settings]) -> None:
    server, _, _ = relay
    _, token = page_session(server)
    line = {"seq": 1, "role": "Avatar", "text": "Bye.", "timestamp": "2026-01-01T00:00:00Z"}
    ended = {"token": token, "entries": [line], "final": True}
    assert httpx.post(f"{server.url}/api/v1/page/transcript", json=ended).json()["status"] == "ended"
    assert "has ended" in await refused(server, token)


async def test_upstream_down_is_refused_quickly_with_the_cause(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = prepared_settings(tmp_path, simulator_url=dead, relay_connect_timeout_seconds=14.0)
    app = create_app(settings)
    with ServerThread(app) as server:
        _, token = page_session(server)
        # Refused as soon as the connection is, not once the (here 14 s) connect timeout runs out.
        message = await asyncio.wait_for(refused(server, token), 7)
        assert "avatar service is unreachable" in message
        assert app.state.relay.open_upstreams == 0


async def test_disallowed_events_are_dropped_and_counted(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay
    sdk = await joined(server)
    await sdk.client.emit("conversationEnded", {})  # a server event, forged by a page: never forwarded
    await sdk.client.emit("__proto__", {"x": 1})
    await eventually_async(
        lambda: app.state.relay.dropped["disallowed"], lambda n: n >= 2, what="disallowed events dropped"
    )
    assert app.state.relay.dropped["disallowed"] == 2
    upstream = upstream_of(app, simulator, sdk)
    assert not {"conversationEnded", "__proto__"} & {
        e["event"] for e in upstream["events"] if e["dir"] == "in"
    }
    await sdk.client.disconnect()


async def test_acks_binary_payloads_and_escaped_credentials_cross_the_relay(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay
    sdk = await joined(server)
    # Upstream emits asking for an acknowledgement: the browser's answer travels back through the relay.
    sdk.client.on("ackProbe", lambda data: {"echo": data, "from": "browser"})
    upstream = upstream_of(app, simulator, sdk)
    async with httpx.AsyncClient() as http:  # this loop must stay free: the SDK answers from it
        answered = await http.post(
            f"{simulator.url}/_sim/sessions/{upstream['id']}/say",
            json={"event": "ackProbe", "data": {"n": 7}, "ack": True},
            timeout=10,
        )
    assert answered.json() == {"ok": True, "ack": [{"echo": {"n": 7}, "from": "browser"}]}
    # And the browser's own emit with a callback is acknowledged (by upstream, through the relay).
    assert await sdk.client.call("checkAvailability", {}, timeout=5) is None
    # Binary attachments reach upstream intact, after their packet.
    await sdk.client.emit("userCameraShot", {"image": b"\x89PNG\r\n\x00\xff", "width": 2})
    # A credential key spelled with a JSON escape is still replaced.
    raw = '42["isValidSession",{"\\u0063lient":"forged-client","flowId":"demo","room":"r2"}]'
    await sdk.client.eio.send(raw[1:])

    def received_upstream() -> list[dict[str, Any]]:
        return [e for e in upstream_of(app, simulator, sdk)["events"] if e["dir"] == "in"]

    events = await eventually_async(
        received_upstream,
        lambda events: (
            {"userCameraShot", "isValidSession"} <= {e["event"] for e in events}
            and any(e["data"].get("room") == "r2" for e in events if e["event"] == "isValidSession")
        ),
        what="what upstream received",
    )
    shot = next(e["data"] for e in events if e["event"] == "userCameraShot")
    assert shot == {"image": repr(b"\x89PNG\r\n\x00\xff"), "width": 2}
    checks = [e["data"] for e in events if e["event"] == "isValidSession"]
    assert checks[-1]["client"] == "demo-client" and checks[-1]["room"] == "r2"
    await sdk.client.disconnect()


async def test_event_flood_is_rate_limited(relay: tuple[ServerThread, FastAPI, Settings]) -> None:
    server, app, settings = relay
    sdk = await joined(server)
    for _ in range(500):
        await sdk.client.emit("pauseConversation", {})
    # The bucket holds two seconds' worth; a flood this fast cannot earn much more before it ends.
    await eventually_async(
        lambda: app.state.relay.dropped["rate"],
        lambda n: n >= 500 - 3 * settings.relay_events_per_second,
        what="events dropped by the rate limit",
    )
    await sdk.client.disconnect()


async def test_oversized_payload_closes_only_that_connection(
    relay: tuple[ServerThread, FastAPI, Settings],
) -> None:
    server, app, settings = relay
    _, token = page_session(server)
    big, small = FakeSdk(), FakeSdk()
    await big.connect(server.url, token, transports=["websocket"])
    _, other_token = page_session(server)
    await small.connect(server.url, other_token, transports=["websocket"])
    await big.wait_for("showAgent")
    await big.client.emit("userCameraShot", {"image": "x" * (settings.relay_max_payload_bytes + 1)})
    await asyncio.wait_for(big.disconnected.wait(), 10)
    assert small.client.connected
    await small.client.disconnect()
    await no_upstream_left(app)


async def test_a_long_polling_post_over_the_limit_is_refused_at_once(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, relay_max_payload_bytes=64 * 1024)
    server = ServerThread(create_app(settings), stop_timeout=5)
    with server:
        polling = {"EIO": "4", "transport": "polling"}
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            opened = await http.get("/socket.io/", params=polling)
            sid = json.loads(opened.text[1:])["sid"]
            started = time.monotonic()
            answer = await http.post(
                "/socket.io/", params={**polling, "sid": sid}, content=b"4" + b"x" * 100_000
            )
            assert answer.status_code == 413 and answer.json()["code"] == "payload_too_large"
            assert time.monotonic() - started < 2
        started = time.monotonic()
    assert time.monotonic() - started < 2  # nothing left for a graceful stop to wait on


async def test_upstream_dropping_mid_conversation_disconnects_the_browser(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay
    _, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    await sdk.wait_for("showAgent")
    upstream = upstream_of(app, simulator, sdk)
    httpx.post(f"{simulator.url}/_sim/sessions/{upstream['id']}/drop")
    await asyncio.wait_for(sdk.disconnected.wait(), 10)
    assert app.state.relay.open_upstreams == 0


async def test_upstream_going_away_without_a_goodbye_disconnects_the_browser(tmp_path: Path) -> None:
    # The service stops (or the network drops): its socket closes with no Socket.IO disconnect packet.
    simulator = ServerThread(create_simulator(SimulatorConfig(time_scale=0.02))).__enter__()
    try:
        app = create_app(prepared_settings(tmp_path, simulator_url=simulator.url))
        with ServerThread(app) as server:
            sdk = await joined(server)
            await asyncio.to_thread(simulator.__exit__)
            await asyncio.wait_for(sdk.disconnected.wait(), 10)
            assert app.state.relay.open_upstreams == 0
            assert not app.state.relay.bridges
    finally:
        simulator.__exit__()


async def test_relay_answers_upstream_heartbeats_so_idle_conversations_stay_up(tmp_path: Path) -> None:
    # A service pinging every second drops a peer that has not answered within a second more.
    config = SimulatorConfig(time_scale=0.02, ping_interval=1, ping_timeout=1)
    with ServerThread(create_simulator(config)) as simulator:
        app = create_app(prepared_settings(tmp_path, simulator_url=simulator.url))
        with ServerThread(app) as server:
            sdk = await joined(server)
            # Idle on purpose, nothing to poll for: three heartbeats pass with not a word from either side.
            await asyncio.sleep(3.5)
            assert app.state.relay.open_upstreams == 1
            await sdk.client.emit("checkAvailability", {})
            await sdk.wait_for("availabilityResult")
            await sdk.client.disconnect()


@contextlib.asynccontextmanager
async def silent_upstream(
    ping_interval_ms: int, reads: bool, release: asyncio.Event | None = None
) -> AsyncIterator[str]:
    """An upstream that completes the handshake, then says nothing (a black-holed network path).

    With `reads` false it does not even read, so a goodbye from the relay is never answered; setting `release`
    makes it hang up.
    """

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(f'0{{"sid":"e","pingInterval":{ping_interval_ms},"pingTimeout":200}}')
        await ws.receive()  # "40"
        await ws.send_str('40{"sid":"s"}')
        await ws.send_str('42["onServerConnected",{}]')
        if not reads:
            await (release.wait() if release else asyncio.sleep(60))  # silent: the scenario itself
            return ws
        async for _ in ws:  # until the relay hangs up
            pass
        return ws

    upstream = web.Application()
    upstream.router.add_get("/socket.io/", silent)
    runner = web.AppRunner(upstream, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_silent_upstream_is_given_up_after_its_own_heartbeat_deadline(tmp_path: Path) -> None:
    async with silent_upstream(300, reads=True) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        with ServerThread(app) as server:
            started = time.monotonic()  # before the handshake: its 0.5 s of silence cannot end sooner
            sdk = await connected(server)
            await sdk.wait_for("onServerConnected")
            await asyncio.wait_for(sdk.disconnected.wait(), 5)  # well before the defaults' 45 s
            assert time.monotonic() - started >= 0.5
            assert app.state.relay.open_upstreams == 0


Talk = Callable[[ServerConnection], Awaitable[None]]


async def framed_and_pinging(ws: ServerConnection) -> None:
    """Pings at the WebSocket level and splits messages across frames, as any server may."""
    await asyncio.wait_for(await ws.ping(), 2)  # no pong: this upstream hangs up, nothing more arrives
    await ws.send(['42["availabilityResult",', '{"isAvailable":true}]'])
    await ws.send('451-["avatarAudio",{"_placeholder":true,"num":0}]')
    await ws.send([b"\x00\x01", b"\x02"])  # the attachment, in two frames


@contextlib.asynccontextmanager
async def websocket_upstream(talk: Talk, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A hand-written upstream on the websockets library: the Socket.IO handshake, then `talk`."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send('0{"sid":"e","pingInterval":25000,"pingTimeout":20000}')
        await ws.recv()  # "40"
        await ws.send('40{"sid":"s"}')
        await talk(ws)
        async for _ in ws:  # until the relay hangs up
            pass

    port = free_port()
    async with serve(handler, "127.0.0.1", port, ssl=tls):
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"


async def test_parallel_connects_cannot_overrun_the_caps_and_refused_sockets_wait_upstream_free(
    tmp_path: Path,
) -> None:
    opened = 0

    async def count(_ws: ServerConnection) -> None:
        nonlocal opened
        opened += 1

    async with websocket_upstream(count) as url:
        settings = prepared_settings(tmp_path, simulator_url=url, relay_max_per_flow=3)
        app = create_app(settings)
        with ServerThread(app) as server:
            sdks = [FakeSdk() for _ in range(20)]
            tokens = [page_session(server)[1] for _ in sdks]
            await asyncio.gather(
                *(sdk.connect(server.url, token) for sdk, token in zip(sdks, tokens, strict=True))
            )
            await eventually_async(
                lambda: app.state.relay.dropped["capacity"], lambda n: n == 17, what="refusals"
            )
            assert opened == 3 and app.state.relay.open_upstreams == 3
            refused = [sdk for sdk in sdks if sdk.client.get_sid() not in app.state.relay.bridges]
            assert len(refused) == 17
            # The SDK's capacity path: `throwToNoAgent`; the socket stays for the SDK's queue to poll.
            await asyncio.wait_for(asyncio.gather(*(sdk.wait_for("throwToNoAgent") for sdk in refused)), 5)
            assert all(sdk.events == [("throwToNoAgent", {})] for sdk in refused)
            assert len(app.state.relay.waiting) == 17 and all(sdk.client.connected for sdk in refused)
            await refused[0].client.emit("checkAvailability", {})
            assert (await refused[0].wait_for("availabilityResult")) == {"available": False}
            assert opened == 3  # polls open nothing upstream
            for sdk in sdks:
                await sdk.client.disconnect()
            await no_upstream_left(app)


async def test_one_page_token_keeps_one_bridge_however_many_connect_at_once(tmp_path: Path) -> None:
    opened = 0

    async def count(_ws: ServerConnection) -> None:
        nonlocal opened
        opened += 1

    async with websocket_upstream(count) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        hub: RelayHub = app.state.relay
        with ServerThread(app) as server:
            _, token = page_session(server)
            sdks = [FakeSdk() for _ in range(10)]
            await asyncio.gather(*(sdk.connect(server.url, token) for sdk in sdks), return_exceptions=True)
            # At most two dial upstream at once; each newer one takes the conversation from the older.
            await eventually_async(lambda: hub.open_upstreams, lambda n: n == 1, what="open upstreams")
            assert opened >= 1 and len(hub.bridges) == 1 and not hub.dialling
            await eventually_async(
                lambda: sum(sdk.client.connected for sdk in sdks), lambda n: n == 1, what="connected sockets"
            )
            reasons = {sdk.refusal for sdk in sdks if sdk.refusal}
            assert reasons <= {
                "This conversation is already connecting in another window. Close it, or reload the page.",
                "A newer connection to this conversation took its place.",
            }
            for sdk in sdks:
                await sdk.client.disconnect()
            await no_upstream_left(app)
            again = FakeSdk()  # nothing is left held when the sockets close
            await again.connect(server.url, token)
            assert again.client.connected
            await again.client.disconnect()


async def test_binary_frames_count_against_the_rate_and_stray_ones_are_dropped(tmp_path: Path) -> None:
    received: list[str | bytes] = []

    async def record(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)

    def binary_upstream() -> list[bytes]:
        return [m for m in received if isinstance(m, bytes)]

    async with websocket_upstream(record) as url:
        settings = prepared_settings(tmp_path, simulator_url=url, relay_max_payload_bytes=256 * 1024)
        app = create_app(settings)
        hub: RelayHub = app.state.relay
        with ServerThread(app) as server:
            sdk = await connected(server)
            for _ in range(50):  # no packet is waiting for these
                await sdk.client.eio.send(b"\0" * 100_000)
            # One event declaring 300 attachments: dropped with every attachment it brings.
            await sdk.client.eio.send('5300-["userCameraShot",{"image":{"_placeholder":true,"num":0}}]')
            for _ in range(3):
                await sdk.client.eio.send(b"\1" * 1000)
            for _ in range(20):  # 4 MB of captures at once, against 256 KB/s with a 512 KB burst
                await sdk.client.emit("userCameraShot", {"image": b"\2" * 200_000})
            await sdk.client.emit("pauseConversation", {})
            await eventually_async(
                lambda: hub.dropped["stray"] + hub.dropped["attachments"] + hub.dropped["rate"],
                lambda n: n >= 50 + 1 + 17,
                what="frames dropped",
            )
            await asyncio.sleep(0.3)
            forwarded = binary_upstream()
            assert hub.dropped["stray"] == 50 and hub.dropped["attachments"] == 1
            assert all(frame == b"\2" * 200_000 for frame in forwarded)  # captures only, each whole
            assert 1 <= len(forwarded) <= 3
            await sdk.client.disconnect()


async def test_upstream_pings_and_messages_in_several_frames_reach_the_browser_whole(tmp_path: Path) -> None:
    async with websocket_upstream(framed_and_pinging) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        with ServerThread(app) as server:
            sdk = await connected(server)
            assert await sdk.wait_for("availabilityResult", timeout=5) == {"isAvailable": True}
            assert await sdk.wait_for("avatarAudio", timeout=5) == b"\x00\x01\x02"
            await sdk.client.disconnect()


async def test_upstream_text_that_is_not_utf8_ends_the_conversation_cleanly(tmp_path: Path) -> None:
    async def garbled(ws: ServerConnection) -> None:
        await ws.send('42["onServerConnected",{}]')
        await ws.recv()  # the browser's first event: the relay is in place
        await ws.send(b'42["stvFinishedTalking",{"agentContent":"\xff"}]', text=True)

    async with websocket_upstream(garbled) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        with ServerThread(app) as server:
            sdk = await connected(server)
            await asyncio.wait_for(sdk.disconnected.wait(), 5)
            assert [name for name, _ in sdk.events] == ["onServerConnected"]
            assert app.state.relay.open_upstreams == 0


async def test_an_upstream_that_hangs_up_as_it_lets_us_in_leaves_nothing_open(tmp_path: Path) -> None:
    async def garbled_at_once(ws: ServerConnection) -> None:
        await ws.send(b"4\xff", text=True)  # read together with the namespace reply before it

    async with websocket_upstream(garbled_at_once) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        with ServerThread(app) as server:
            for _ in range(3):
                _, token = page_session(server)
                sdk = FakeSdk()
                # Refused, or let in and dropped: either way nothing stays open.
                with contextlib.suppress(socketio.exceptions.ConnectionError):
                    await sdk.connect(server.url, token)
                    await asyncio.wait_for(sdk.disconnected.wait(), 5)
                assert not sdk.client.connected
                assert app.state.relay.open_upstreams == 0


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key: trusted only where it is named as a CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test upstream")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "upstream.pem", directory / "upstream.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


async def test_a_tls_upstream_is_reached_only_with_a_certificate_the_server_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)
    upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_tls.load_cert_chain(cert_file, key_file)
    async with websocket_upstream(framed_and_pinging, upstream_tls) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        with ServerThread(app) as server:
            _, token = page_session(server)
            assert "certificate this server does not trust" in await refused(server, token)
            assert app.state.relay.open_upstreams == 0
            monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # OpenSSL's trust store, read per context
            tls_context.cache_clear()
            try:
                sdk = FakeSdk()
                await sdk.connect(server.url, token)
                assert await sdk.wait_for("availabilityResult", timeout=5) == {"isAvailable": True}
                await sdk.client.disconnect()
            finally:
                tls_context.cache_clear()


async def test_a_stalled_upstream_holds_the_browser_back_instead_of_filling_the_relay(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with silent_upstream(60_000, reads=False, release=release) as url:
        # Rate limits out of the way (events and bytes): what is measured is backpressure alone.
        limits = {"relay_events_per_second": 100_000, "relay_max_payload_bytes": 64 * 1024 * 1024}
        app = create_app(prepared_settings(tmp_path, simulator_url=url, **limits))
        with ServerThread(app) as server:
            sdk = await connected(server)
            await sdk.wait_for("onServerConnected")
            shot = {"image": "x" * 100_000}
            # 15 MB: more than the kernel buffers on both sides of the stalled socket hold.
            for _ in range(150):
                await sdk.client.emit("userCameraShot", shot)
            (bridge,) = app.state.relay.bridges.values()

            async def buffered_twice() -> tuple[int, int]:
                before = bridge.upstream._transport.get_write_buffer_size()
                await asyncio.sleep(0.3)  # the interval of the measurement, not a wait for something
                return before, bridge.upstream._transport.get_write_buffer_size()

            # Until the relay has written what it will: the kernel's buffers full, its own not moving.
            _, held = await eventually_async(
                buffered_twice, lambda sizes: sizes[0] == sizes[1] > 0, what="the relay's upstream buffer"
            )
            assert bridge.upstream.connected
            # What the relay holds for upstream stays near the transport's high-water mark; the rest waits
            # in the browser's socket, as it would behind any slow server.
            assert held < 512 * 1024
            release.set()  # upstream hangs up at last: the browser, held back until now, hears of it
            await asyncio.wait_for(sdk.disconnected.wait(), 5)
            assert app.state.relay.open_upstreams == 0


async def test_shutdown_does_not_wait_long_on_upstreams_that_never_answer_a_goodbye(tmp_path: Path) -> None:
    async with silent_upstream(60_000, reads=False) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url))
        # Each goodbye waits at most 1 s for an answer, all at once: stopping fails loudly past 5 s.
        server = ServerThread(app, stop_timeout=5).__enter__()
        for _ in range(3):
            _, token = page_session(server)
            await FakeSdk().connect(server.url, token)
        assert app.state.relay.open_upstreams == 3
        await asyncio.to_thread(server.stop)
        assert not server.thread.is_alive()


async def test_one_client_address_holds_only_so_many_conversations(
    tmp_path: Path, simulator: ServerThread
) -> None:
    """Past the cap the next conversation from that address is refused with a sentence; a reconnect of one
    it holds is not; another address is not held back; ending one makes room (addresses from the trusted
    balancer's X-Forwarded-For, as behind nginx)."""
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, relay_max_per_address=2)
    app = create_app(settings)
    one, other = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "198.51.100.7"}
    with ServerThread(app) as server:
        tokens = [page_session(server)[1] for _ in range(4)]
        first, second = FakeSdk(), FakeSdk()
        await first.connect(server.url, tokens[0], headers=one)
        await second.connect(server.url, tokens[1], headers=one)
        await asyncio.gather(first.wait_for("showAgent"), second.wait_for("showAgent"))
        assert "Too many conversations" in await refused(server, tokens[2], headers=one)
        elsewhere = FakeSdk()
        await elsewhere.connect(server.url, tokens[2], headers=other)
        await elsewhere.wait_for("showAgent")
        again = FakeSdk()  # the first page's SDK reconnecting: its conversation is already counted
        await again.connect(server.url, tokens[0], headers=one)
        await again.wait_for("showAgent")
        await second.client.disconnect()
        await eventually_async(lambda: _held(app, "203.0.113.5"), lambda held: held == 1, what="one held")
        third = FakeSdk()
        await third.connect(server.url, tokens[3], headers=one)
        await third.wait_for("showAgent")
        for sdk in (first, elsewhere, again, third):
            await sdk.client.disconnect()
        await eventually_async(lambda: _held(app, "203.0.113.5"), lambda held: held == 0, what="none held")


async def _held(app: FastAPI, address: str) -> int:
    """Slots the address holds in the app's shared state (in process: no I/O, read from any loop)."""
    held: int = await app.state.shared.held(budgets.address_key(address))
    return held
