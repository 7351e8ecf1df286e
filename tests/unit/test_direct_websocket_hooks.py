"""Canary for the python-engineio, uvicorn and websockets internals the browser leg's direct WebSocket mode
and the relay's quick framing build on (server/relay/engineio_server.py, browser_websocket.py, frames.py).

`DirectWebSocket` stands in for python-engineio's ASGI WebSocket driver and runs the Engine.IO session the way
`AsyncSocket._websocket_handler` does; `LeanWebSocketProtocol` takes over uvicorn's receive path. None of that
is public API: these tests say which piece moved, under which installed versions, and what to look at.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import engineio
from engineio import async_socket, base_socket
from engineio.async_drivers import asgi
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from websockets.utils import accept_key

from server.relay.engineio_server import DirectWebSocket, LeanEngineIOServer, SinkQueue

VERSIONS = (
    f"python-engineio {version('python-engineio')}, uvicorn {version('uvicorn')}, "
    f"websockets {version('websockets')}"
)


def moved(what: str, look_at: str) -> str:
    return f"{what}, under {VERSIONS}; the direct WebSocket mode relies on it: check {look_at}"


def source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_engineio_builds_its_websocket_driver_from_the_servers_table() -> None:
    upgrade = source(async_socket.AsyncSocket._upgrade_websocket)
    assert "self.server._async['websocket'](" in upgrade and "self._websocket_handler" in upgrade, moved(
        "AsyncSocket._upgrade_websocket no longer calls _async['websocket'](self._websocket_handler, server)",
        "LeanEngineIOServer.__init__ and DirectWebSocket",
    )
    server = LeanEngineIOServer(async_mode="asgi")
    assert server._async["websocket"] is DirectWebSocket
    assert asgi._async["websocket"] is asgi.WebSocket, moved(
        "the asgi driver table changed (or this server's copy leaked into it)", "LeanEngineIOServer.__init__"
    )
    request = source(asgi.translate_request)
    for key in ("'asgi.receive'", "'asgi.send'", "'asgi.scope'"):
        assert key in request, moved(f"the ASGI environ has no {key}", "DirectWebSocket.__call__")


def test_engineio_websocket_handler_is_the_one_direct_mode_mirrors() -> None:
    handler = source(async_socket.AsyncSocket._websocket_handler)
    for piece, what in [
        ("self.upgrading = True", "the upgrade's flags"),
        ("packet.PING", "the upgrade probe"),
        ("data='probe'", "the upgrade probe"),
        ("self.queue.put(packet.Packet(packet.NOOP))", "the end of the pending long-poll"),
        ("packet.UPGRADE", "the upgrade packet"),
        ("self.server.ping_interval + self.server.ping_timeout", "the read timeout (`_Session._silent`)"),
        ("len(data) > self.server.max_http_buffer_size", "the size limit"),
        ("await self.queue.put(None)", "the end: the writer gets None"),
        ("reason=self.server.reason.TRANSPORT_CLOSE", "the close reason"),
    ]:
        assert piece in handler, moved(
            f"AsyncSocket._websocket_handler changed ({what}: {piece!r} is gone)", "_upgrade and _Session.run"
        )
    receive = source(async_socket.AsyncSocket.receive)
    assert "'message', self.sid, pkt.data" in receive, moved(
        "AsyncSocket.receive no longer hands a message's data to the 'message' handler", "_Session.run"
    )
    send = source(async_socket.AsyncSocket.send)
    assert "check_ping_timeout" in send and "self.queue.put(pkt)" in send, moved(
        "AsyncSocket.send no longer checks the ping and queues", "LeanEngineIOServer.send and SinkQueue"
    )
    init = source(base_socket.BaseSocket.__init__)
    for attribute in ("self.queue = self.server.create_queue()", "self.last_ping", "self.upgraded"):
        assert attribute in init, moved(f"BaseSocket has no {attribute}", "engineio_server.py")
    assert hasattr(engineio.AsyncServer.reason, "TRANSPORT_CLOSE")


def test_a_direct_queue_still_queues_without_a_session() -> None:
    queue = SinkQueue()
    queue.put_nowait("a")
    assert queue.get_nowait() == "a" and queue.empty()


def test_uvicorn_protocol_parts_direct_mode_takes_over() -> None:
    for method in ("send_receive_event_to_app", "handle_connect", "handle_parser_exception", "receive"):
        assert hasattr(WebSocketsSansIOProtocol, method), moved(
            f"WebSocketsSansIOProtocol.{method} is gone", "LeanWebSocketProtocol"
        )
    to_app = source(WebSocketsSansIOProtocol.send_receive_event_to_app)
    for piece in (
        "self.frames",
        "self.curr_msg_data_type",
        "self.close_sent",
        "self.transport.pause_reading()",
    ):
        assert piece in to_app, moved(
            f"send_receive_event_to_app no longer uses {piece}",
            "LeanWebSocketProtocol.send_receive_event_to_app",
        )
    connect = source(WebSocketsSansIOProtocol.handle_connect)
    assert '"extensions": {' in connect and "self.scope" in connect, moved(
        "handle_connect no longer builds self.scope with an extensions dict",
        "LeanWebSocketProtocol.handle_connect",
    )
    whole = inspect.getsource(WebSocketsSansIOProtocol)
    # Every websocket.disconnect reaches the app through `self.queue.put_nowait`, which DirectInbox replaces.
    disconnects = whole.count('"type": "websocket.disconnect"')
    assert disconnects == whole.count('self.queue.put_nowait({"type": "websocket.disconnect"'), moved(
        "a websocket.disconnect event reaches the app some other way than self.queue.put_nowait",
        "DirectInbox.put_nowait",
    )
    receive = source(WebSocketsSansIOProtocol.receive)
    assert "self.read_paused" in receive and "resume_reading" in receive, moved(
        "uvicorn's receive no longer resumes reading with read_paused",
        "LeanWebSocketProtocol.resume_app_reading",
    )
    for attribute in (
        "self.writable = asyncio.Event()",
        "self.conn = ServerProtocol(",
        "self.read_paused = False",
    ):
        assert attribute in source(WebSocketsSansIOProtocol.__init__), moved(
            f"WebSocketsSansIOProtocol.__init__ has no {attribute}", "LeanWebSocketProtocol.can_send"
        )


def test_the_quick_framing_s_hooks_into_uvicorn_and_websockets() -> None:
    """server/relay/frames.py hands websockets whole frames and writes its own next to websockets' output."""
    look = "frames.py, LeanWebSocketProtocol.data_received and UpstreamSocket.data_received"
    received = source(WebSocketsSansIOProtocol.data_received)
    assert "self.conn.receive_data(data)" in received and "self.handle_events()" in received, moved(
        "uvicorn's data_received no longer feeds websockets and handles its events", look
    )
    # Whatever websockets queues to send, uvicorn writes at once: a frame written beside it keeps its place.
    whole = inspect.getsource(WebSocketsSansIOProtocol)
    operations = sum(
        whole.count(f"self.conn.{op}(") for op in ("send_text", "send_binary", "send_close", "send_ping")
    )
    assert operations and whole.count("self.conn.data_to_send()") >= operations, moved(
        "uvicorn queues frames in websockets without writing them at once", "LeanWebSocketProtocol.send_frame"
    )
    server = ServerProtocol()
    client = ClientProtocol(parse_uri("ws://localhost/"))
    for protocol in (server, client):
        for attribute in ("current_size", "max_message_size", "parser_exc", "state"):
            assert hasattr(protocol, attribute), moved(f"websockets' protocol has no {attribute}", look)
    # A 101 answer's head is all websockets reads of it: the quick framing starts right after its blank line.
    client.send_request(client.connect())
    request = client.data_to_send()[0].decode()
    key = next(line.split(": ")[1] for line in request.split("\r\n") if line.startswith("Sec-WebSocket-Key"))
    client.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )
    assert client.state is State.OPEN, moved(
        "websockets' client is not open after the 101 answer's head", look
    )
