"""Canary for the python-socketio / python-engineio internals the relay builds on (server/relay/sockets.py).

The relay's BrowserServer overrides two private methods of socketio.AsyncServer and reaches into its Engine.IO
server and manager. None of that is public API, so an upgrade can change it without notice; these tests say
which piece moved, under which installed versions, and what to look at.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from importlib.metadata import version
from typing import Any, cast

import engineio
import httpx
import socketio

from server.relay.sockets import BrowserServer, RelayHub

VERSIONS = f"python-socketio {version('python-socketio')}, python-engineio {version('python-engineio')}"
WHERE = "server/relay/sockets.py"

# Private or undocumented callables the relay calls or overrides, with the parameters it passes.
CALLED: list[tuple[Any, str, list[str]]] = [
    (socketio.AsyncServer, "_handle_eio_message", ["eio_sid", "data"]),
    (socketio.AsyncServer, "_handle_connect", ["eio_sid", "namespace", "data"]),
    (socketio.AsyncManager, "eio_sid_from_sid", ["sid", "namespace"]),
    (engineio.AsyncServer, "send", ["sid", "data"]),
]
COROUTINES = {"_handle_eio_message", "_handle_connect", "send"}


def moved(what: str, look_at: str) -> str:
    return f"{what}, under {VERSIONS}; the relay relies on it: check {look_at} in {WHERE}"


def positional(function: Any) -> list[str]:
    parameters = list(inspect.signature(function).parameters.values())
    return [p.name for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]


def test_the_private_methods_the_relay_uses_keep_their_parameters() -> None:
    for owner, attribute, expected in CALLED:
        name = f"{owner.__module__.split('.')[0]}.{owner.__name__}.{attribute}"
        assert hasattr(owner, attribute), moved(f"{name} is gone", "BrowserServer and RelayHub")
        function = getattr(owner, attribute)
        assert positional(function) == expected, moved(
            f"{name} now takes {positional(function)}, the relay passes {expected}",
            "BrowserServer and RelayHub",
        )
        if attribute in COROUTINES:
            assert inspect.iscoroutinefunction(function), moved(
                f"{name} is no longer a coroutine", "the awaits"
            )
    for override in ("_handle_eio_message", "_handle_connect"):
        mine = positional(getattr(BrowserServer, override))
        parent = positional(getattr(socketio.AsyncServer, override))
        assert mine == parent, moved(f"BrowserServer.{override} takes {mine}, the parent {parent}", override)


class Hub:
    """The three members of RelayHub that BrowserServer uses: the bridged Engine.IO sessions, two callbacks.

    A real RelayHub needs a database and an upstream; these checks are about python-socketio alone.
    """

    def __init__(self) -> None:
        self.by_eio: dict[str, str] = {}
        self.relayed: list[str | bytes] = []
        self.server: BrowserServer | None = None

    async def from_browser(self, _bridge: str, data: str | bytes) -> None:
        self.relayed.append(data)

    async def browser_connected(self, eio_sid: str) -> None:
        assert self.server is not None
        self.by_eio[eio_sid] = "bridge"
        await self.server.eio.send(eio_sid, '2["from upstream"]')  # what the relay sends after the ack


def browser_server(hub: Hub) -> BrowserServer:
    # The options the relay uses (RelayHub.__init__).
    server = BrowserServer(
        cast(RelayHub, hub), async_mode="asgi", async_handlers=False, logger=False, engineio_logger=False
    )
    hub.server = server
    return server


def test_engineio_hands_messages_to_the_override_one_at_a_time() -> None:
    server = browser_server(Hub())
    assert hasattr(server, "eio") and hasattr(server, "manager"), moved(
        "socketio.AsyncServer has no `eio` or `manager` attribute", "self.sio.eio and self.sio.manager"
    )
    handler = server.eio.handlers.get("message")
    assert getattr(handler, "__func__", None) is BrowserServer._handle_eio_message, moved(
        "Engine.IO's message handler is no longer AsyncServer._handle_eio_message", "BrowserServer"
    )
    assert server.eio.async_handlers is False, moved(
        "Engine.IO runs message handlers as tasks, so a browser's packets may be relayed out of order",
        "async_handlers in RelayHub",
    )


async def test_a_connect_is_acknowledged_before_the_relay_speaks_and_events_reach_it_encoded() -> None:
    hub = Hub()
    server = browser_server(hub)
    seen: dict[str, Any] = {}

    async def on_connect(sid: str, environ: dict[str, Any], _auth: Any = None) -> None:
        seen["environ_keys"] = set(environ)
        seen["query"] = environ.get("QUERY_STRING", "")
        seen["eio_sid"] = server.manager.eio_sid_from_sid(sid, "/")

    server.on("connect", on_connect)
    app = socketio.ASGIApp(server, socketio_path="socket.io")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://relay.test") as http:
        base = "/socket.io/?EIO=4&transport=polling&client=page-token&flowId=demo"
        opened = (await http.get(base)).text
        eio_sid = json.loads(opened[1:])["sid"]
        poll = f"{base}&sid={eio_sid}"
        await http.post(poll, content="40")
        try:
            async with asyncio.timeout(5):
                after_connect = (await http.get(poll)).text.split("\x1e")
        except TimeoutError:
            raise AssertionError(
                moved("a Socket.IO connect packet got no answer", "BrowserServer._handle_eio_message")
            ) from None
        await http.post(poll, content='42["onTextEntered",{"text":"hi"}]')

    keys = sorted(seen["environ_keys"])
    assert "QUERY_STRING" in keys, moved(
        f"the connect handler's environ has no QUERY_STRING ({keys})", "_on_connect"
    )
    assert "wsgi.input" in keys, moved(
        f"the environ kept per socket has no wsgi.input any more ({keys}): what holds the request now?",
        "the memory note in RelayHub._on_connect",
    )
    assert "client=page-token" in seen["query"], moved("QUERY_STRING changed shape", "RelayHub._on_connect")
    assert seen["eio_sid"] == eio_sid, moved(
        "manager.eio_sid_from_sid no longer maps", "RelayHub._on_connect"
    )
    assert [packet[:2] for packet in after_connect] == ["40", "42"], moved(
        f"the connect acknowledgement is no longer sent before _handle_connect returns (got {after_connect})",
        "BrowserServer._handle_connect and RelayHub.browser_connected",
    )
    assert hub.relayed == ['2["onTextEntered",{"text":"hi"}]'], moved(
        f"_handle_eio_message no longer receives the encoded Socket.IO packet (got {hub.relayed})",
        "BrowserServer._handle_eio_message and RELAYED_TYPES",
    )


async def test_a_long_poll_is_answered_once_its_sessions_queue_yields_none() -> None:
    # RelayHub._send_away at shutdown: a long-poll a closing client left open is answered by putting None in
    # its Engine.IO session's queue, which python-engineio otherwise answers only after its ping timeout.
    server = browser_server(Hub())
    app = socketio.ASGIApp(server, socketio_path="socket.io")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://relay.test") as http:
        base = "/socket.io/?EIO=4&transport=polling"
        eio_sid = json.loads((await http.get(base)).text[1:])["sid"]
        session = server.eio.sockets.get(eio_sid)
        assert session is not None and session.closed is False and hasattr(session, "queue"), moved(
            "engineio.AsyncServer.sockets no longer maps a session id to a socket with `closed` and `queue`",
            "RelayHub._send_away",
        )
        poll = asyncio.ensure_future(http.get(f"{base}&sid={eio_sid}"))
        await asyncio.sleep(0.1)
        session.queue.put_nowait(None)
        try:
            async with asyncio.timeout(5):
                answered = await poll
        except TimeoutError:
            raise AssertionError(
                moved("a long-poll ignored None in its queue", "RelayHub._send_away")
            ) from None
    assert answered.status_code == 200
