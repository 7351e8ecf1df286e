"""python-engineio's server with a smaller per-socket packet queue (see `lean_queue`) and a cheaper WebSocket
transport for the relay's browser sockets.

python-engineio's WebSocket handler reads each message through a new task wrapped in `asyncio.wait_for`, and
writes through the socket's queue and a writer task; uvicorn adds an ASGI event dict per message each way.
On `browser_websocket`'s protocol `DirectWebSocket` runs the same Engine.IO session with a plain loop over
the messages received (one wake-up per batch, a timer for silence instead of a timeout per read), and a packet
put in the socket's queue goes straight to the WebSocket when nothing is queued before it (`SinkQueue`).
Long-polling, and the upgrade from it, are python-engineio's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import engineio
from engineio import exceptions, packet
from engineio.async_drivers.asgi import WebSocket as AsgiWebSocket
from engineio.async_socket import AsyncSocket

from server.relay.browser_websocket import DIRECT, DirectInbox, LeanWebSocketProtocol
from server.relay.lean_queue import LeanQueue

log = logging.getLogger("avatar_bff.relay")


class SinkQueue(LeanQueue[Any]):
    """A socket's packets to send; on a direct WebSocket (`session`), a packet that would be first in line is
    sent at once instead, and kept in the queue only if it cannot be (closing, or a browser slow to read)."""

    __slots__ = ("session",)

    def __init__(self) -> None:
        super().__init__()
        self.session: _Session | None = None

    def put_nowait(self, item: Any) -> None:
        if self.session is not None and not self._items and self.session.sink(item):
            return
        super().put_nowait(item)


class LeanEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The driver table is the asgi module's own dict: copied, so that only this server changes.
        drivers: dict[str, Any] = getattr(self, "_async")  # noqa: B009 - untyped in python-engineio
        self._async = {**drivers, "websocket": DirectWebSocket}
        # A Socket.IO packet from a direct WebSocket, handled at once if that needs no wait (BrowserServer's);
        # False: it goes to the message handler.
        self.handle_now: Callable[[str, str], bool] | None = None

    def create_queue(self, *args: Any, **kwargs: Any) -> SinkQueue:
        """Each browser socket's queue of packets to send: ~3 KB less per idle socket than asyncio.Queue."""
        return SinkQueue()

    async def send(self, sid: str, data: Any) -> None:
        """A message to one browser: on a direct WebSocket with nothing queued, written now, without
        python-engineio's packet object and the three coroutines between here and the queue."""
        if not (isinstance(data, str) and self.can_send_now(sid)):
            await super().send(sid, data)
        else:
            self.send_now(sid, data)

    def can_send_now(self, sid: str) -> bool:
        """`send_now` would write the message: the socket is on a direct WebSocket that takes it now."""
        socket = self.sockets.get(sid)
        session = None if socket is None else socket.queue.session
        return (
            session is not None
            and not socket.closed
            and not (
                socket.last_ping and time.time() - socket.last_ping > self.ping_timeout
            )  # its ping check
            and session.can_send()
        )

    def send_now(self, sid: str, data: str) -> None:
        """Write a message to a socket `can_send_now` said yes to, in the same turn of the event loop."""
        self.sockets[sid].queue.session.write_message(data)


class DirectWebSocket:
    """python-engineio's WebSocket driver interface (`driver(handler, server)`, then `await driver(environ)`),
    running the socket's Engine.IO session itself when the connection is on `LeanWebSocketProtocol`."""

    __slots__ = ("_handler", "_server")

    def __init__(self, handler: Callable[..., Any], server: LeanEngineIOServer) -> None:
        self._handler = handler
        self._server = server

    async def __call__(self, environ: dict[str, Any]) -> str:
        protocol = environ["asgi.scope"].get("extensions", {}).get(DIRECT)
        socket = getattr(self._handler, "__self__", None)
        if not isinstance(protocol, LeanWebSocketProtocol) or not isinstance(socket, AsyncSocket):
            return await AsgiWebSocket(self._handler, self._server)(environ)  # type: ignore[no-any-return]
        await environ["asgi.send"]({"type": "websocket.accept"})
        if socket.connected and not await _upgrade(socket, environ):
            return ""
        if not socket.connected:
            socket.connected = True
            socket.upgraded = True
        await _Session(socket, protocol, environ["asgi.send"]).run()
        return ""


async def _upgrade(socket: AsyncSocket, environ: dict[str, Any]) -> bool:
    """The probe and upgrade packets of a long-polling socket moving to WebSocket, as python-engineio's
    `AsyncSocket._websocket_handler` does it (4.x)."""
    receive, send = environ["asgi.receive"], environ["asgi.send"]

    async def message() -> str | bytes | None:
        event = await receive()
        if event["type"] != "websocket.receive":
            return None
        data: str | bytes | None = event.get("text") if event.get("bytes") is None else event["bytes"]
        return data

    socket.upgrading = True  # packets sent meanwhile wait in the queue
    probe = await message()
    decoded = _decode(probe)
    if decoded is None or decoded.packet_type != packet.PING or decoded.data != "probe":
        socket.upgrading = False
        return False
    await send({"type": "websocket.send", "text": packet.Packet(packet.PONG, data="probe").encode()})
    await socket.queue.put(packet.Packet(packet.NOOP))  # ends the pending long-poll
    decoded = _decode(await message())
    socket.upgrading = False
    if decoded is None or decoded.packet_type != packet.UPGRADE:
        socket.upgraded = False
        return False
    socket.upgraded = True
    return True


def _decode(data: str | bytes | None) -> packet.Packet | None:
    if not data:
        return None
    try:
        return packet.Packet(encoded_packet=data)
    except (ValueError, IndexError):
        return None


class _Session:
    """One Engine.IO session on a direct WebSocket, until either side ends it."""

    __slots__ = (
        "_drain",
        "_heard",
        "_inbox",
        "_protocol",
        "_send",
        "_server",
        "_silence",
        "_socket",
        "_timer",
    )

    def __init__(self, socket: AsyncSocket, protocol: LeanWebSocketProtocol, send: Any) -> None:
        self._socket = socket
        self._server: LeanEngineIOServer = socket.server
        self._protocol = protocol
        self._send = send  # the ASGI send, for the close
        self._inbox: DirectInbox | None = None
        self._drain: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = 0.0  # loop time of the last message from the browser
        self._silence = (
            self._server.ping_interval + self._server.ping_timeout
        )  # python-engineio's read timeout

    async def run(self) -> None:
        socket, server = self._socket, self._server
        inbox = self._inbox = self._protocol.go_direct()
        queue: SinkQueue = socket.queue
        queue.session = self
        if not queue.empty():  # sent during the upgrade: these go first
            self._start_drain()
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        self._timer = loop.call_at(self._heard + self._silence, self._silent)
        handler = server.handlers.get("message")
        too_large = server.max_http_buffer_size
        inbox.handle_now = self._handle_now
        try:
            while inbox.reason is None:
                inbox.busy = False
                await inbox.wait()
                inbox.busy = True
                self._heard = loop.time()
                for message in inbox.take():
                    if len(message) > too_large:
                        inbox.end("too large")
                        break
                    if isinstance(message, str) and message[:1] == "4" and message[1:2].isdigit():
                        # An Engine.IO message with a Socket.IO packet, which python-engineio would pass on
                        # as this string after failing to read it as JSON: one exception less per message.
                        if handler is not None:
                            try:
                                await handler(socket.sid, message[1:])
                            except Exception:
                                log.exception("relay: a browser message could not be handled")
                        continue
                    decoded = _decode(message)
                    if decoded is None:  # python-engineio's handler would end here too, with a traceback
                        inbox.end("not Engine.IO")
                        break
                    try:
                        await socket.receive(decoded)
                    except exceptions.UnknownPacketError:
                        pass
                    except exceptions.SocketIsClosedError:
                        inbox.end("closed")
                        break
                    except Exception:
                        log.exception("relay: a browser message could not be handled")
        finally:
            inbox.handle_now = None
            if self._timer is not None:
                self._timer.cancel()
            queue.session = None
        # As python-engineio's handler ends: its writer gets None, closes the WebSocket after what is queued.
        queue.put_nowait(None)
        self._start_drain()
        if self._drain is not None:
            await self._drain
        await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

    def _handle_now(self, message: str | bytes) -> bool:
        """A message the server's `handle_now` (BrowserServer's) can relay without waiting, in the read."""
        handle_now = self._server.handle_now
        if (
            handle_now is None
            or not isinstance(message, str)
            or message[:1] != "4"
            or not message[1:2].isdigit()
            or len(message) > self._server.max_http_buffer_size
        ):
            return False
        try:
            handled = handle_now(self._socket.sid, message[1:])
        except Exception:  # as in `run`: logged, and the socket carries on (here, in the transport's read)
            log.exception("relay: a browser message could not be handled")
            handled = True  # it may be half done: not handled a second time
        if handled:
            self._heard = self._protocol.loop.time()
        return handled

    def _silent(self) -> None:
        """Nothing from the browser for a ping interval and timeout: python-engineio's read times out.
        One timer, moved on only when it fires, rather than a new one per message."""
        loop = asyncio.get_running_loop()
        due = self._heard + self._silence
        if loop.time() < due:
            self._timer = loop.call_at(due, self._silent)
        elif self._inbox is not None:
            self._inbox.end("silent")

    def sink(self, item: packet.Packet | None) -> bool:
        """Send a packet now if it may go before nothing else; else make sure the queue is written."""
        if item is None or self._drain is not None or not self._protocol.send_frame(item.encode()):
            self._start_drain()
            return False
        return True

    def can_send(self) -> bool:
        return self._drain is None and self._protocol.can_send()

    def write_message(self, data: str) -> None:
        """An Engine.IO message, now, for a caller that saw `can_send` in this same turn of the event loop."""
        self._protocol.write_text("4" + data)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        """What the sink could not send at once, in order: when the browser reads again, or at the end."""
        protocol, queue = self._protocol, self._socket.queue
        try:
            while not queue.empty():
                await protocol.writable.wait()
                item = queue.get_nowait()
                queue.task_done()
                if item is None:
                    with contextlib.suppress(Exception):  # already closed: nothing to say
                        await self._send({"type": "websocket.close"})
                    queue.session = None
                    return
                if not protocol.send_frame(item.encode()):
                    queue.session = None  # closing: what is left is not sent, as python-engineio's writer
                    return
        finally:
            self._drain = None
