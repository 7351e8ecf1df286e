"""uvicorn's WebSocket protocol (websockets' sans-I/O one, uvicorn's default) with less kept per idle socket,
and a direct mode for the relay's browser sockets.

Measured per idle relayed session, 6.8 KB less in all: its receive queue, an asyncio.Queue with a join Event
(~3.4 KB; `lean_queue` instead), and the opening handshake's request and response objects with their headers,
kept as long as the socket lives though nothing reads them after the handshake.

Frames are cut by `frames.FrameReader` from the end of the opening request on: a whole text message is read
there, any other frame is handed whole to websockets and uvicorn's handlers as before.

Direct mode (`go_direct`, used by `engineio_server` once a browser socket speaks Engine.IO over WebSocket):
received messages go to a `DirectInbox` as they are, instead of an ASGI event dict each in the receive queue
with reading paused after every one (two epoll changes per message); frames are sent by `send_frame`, a plain
call, instead of an awaited ASGI `websocket.send` message. The ASGI app still gets the `websocket.disconnect`
events, through the same inbox. Offered to the app as the scope extension `DIRECT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from server.relay.frames import FrameReader, HeaderEnd, text_frame
from server.relay.lean_queue import LeanQueue

WS_PROTOCOL = "server.relay.browser_websocket:LeanWebSocketProtocol"
DIRECT = "avatar_bff.direct_websocket"  # the scope extension that holds the protocol
READ_AHEAD = 64 * 1024  # characters or bytes of received messages held before reading pauses


class DirectInbox:
    """A direct-mode socket's received messages and its end, for one reader (`wait`, then `take`)."""

    __slots__ = ("_waiter", "busy", "handle_now", "held", "messages", "protocol", "reason")

    def __init__(self, protocol: LeanWebSocketProtocol) -> None:
        self.protocol = protocol
        # Takes a message at once, in the read, when nothing before it is still being handled; False: the
        # reader gets it. Set by the reader, as `busy` while it handles messages.
        self.handle_now: Callable[[str | bytes], bool] | None = None
        self.busy = False
        self.messages: list[str | bytes] = []
        self.held = 0  # their size
        self.reason: str | None = None  # why reading ended: "disconnect", or the reader's own (`end`)
        self._waiter: asyncio.Future[None] | None = None

    def add(self, message: str | bytes) -> None:
        if self.handle_now is not None and not self.busy and not self.messages and self.handle_now(message):
            return
        self.messages.append(message)
        self.held += len(message)
        if self.held > READ_AHEAD:  # the reader is behind (upstream slow): the browser waits in TCP
            self.protocol.pause_app_reading()
        self._wake()

    def put_nowait(self, event: dict[str, Any]) -> None:
        # uvicorn puts its `websocket.disconnect` events in `protocol.queue`, which this replaces.
        self.end("disconnect")

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self._wake()

    def take(self) -> list[str | bytes]:
        messages, self.messages, self.held = self.messages, [], 0
        self.protocol.resume_app_reading()
        return messages

    async def wait(self) -> None:
        """Until there is a message or the end."""
        if self.messages or self.reason is not None:
            return
        self._waiter = self.protocol.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    # Class defaults: an idle socket's attribute dict stays as it was.
    direct: DirectInbox | None = None
    reader: FrameReader | None = None  # the quick framing, from the end of the opening request
    head: HeaderEnd | None = None  # until the opening request has been read

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()  # type: ignore[assignment]  # put_nowait, get and empty are all it uses
        self.head = HeaderEnd()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None:
            rest = reader.feed(data, self._take_text, self._take_frame)
            if rest is not None:  # websockets reads everything from here on
                self.reader = None
                if rest and self.conn.parser_exc is None:  # a failed parser reads nothing more
                    super().data_received(rest)
            return
        head = self.head
        end = -1 if head is None else head.find(data)
        if end < 0:
            super().data_received(data)
            return
        self.head = None
        super().data_received(data[:end])
        if self.handshake_initiated and not self.close_sent and self.conn.parser_exc is None:
            limit = self.conn.max_message_size
            self.reader = FrameReader(masked=True, limit=2**63 if limit is None else limit)
        if end < len(data):
            self.data_received(data[end:])

    def _take_text(self, text: str) -> bool:
        inbox = self.direct
        if inbox is None or self.conn.state is not State.OPEN or self.conn.current_size is not None:
            return False  # not yet direct, closing, or inside a fragmented message: websockets judges it
        inbox.add(text)
        return True

    def _take_frame(self, frame: bytes) -> bool:
        super().data_received(frame)
        return self.conn.parser_exc is None and self.conn.state is State.OPEN

    def start_keepalive(self) -> None:
        # Called once, when the handshake's answer is sent: nothing reads its request or response again.
        self.request = self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only when the request is a valid upgrade
        if scope is not None:
            scope["extensions"][DIRECT] = self

    # Direct mode.

    def go_direct(self) -> DirectInbox:
        """From now on received messages and the end go to the returned inbox; what the ASGI receive queue
        already holds is moved there first, in order."""
        inbox = DirectInbox(self)
        queued: LeanQueue[dict[str, Any]] = self.queue  # type: ignore[assignment]
        while not queued.empty():
            event = queued.get_nowait()
            if event["type"] == "websocket.receive":
                message = event.get("text")
                inbox.add(event["bytes"] if message is None else message)
            else:
                inbox.end("disconnect")
        self.direct = inbox
        self.queue = inbox  # type: ignore[assignment]
        if not inbox.messages:
            self.resume_app_reading()
        return inbox

    def send_receive_event_to_app(self) -> None:
        inbox = self.direct
        if inbox is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:  # as uvicorn: past its close, messages are dropped while it waits for the reply
            return
        if self.curr_msg_data_type == "bytes":
            inbox.add(data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.logger.info("Invalid UTF-8 sequence received from client.")
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        inbox.add(text)

    def can_send(self) -> bool:
        return (
            not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        )

    def send_frame(self, message: str | bytes) -> bool:
        """Send one message now, unless the socket is closing or its write buffer is full (then False)."""
        if not self.can_send():
            return False
        if isinstance(message, str):
            self.write_text(message)
            return True
        self.conn.send_binary(message)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def write_text(self, message: str) -> None:
        """One text message, now, for a caller that saw `can_send` in this same turn of the event loop.
        uvicorn writes whatever websockets queues at once, so nothing of websockets' waits before it."""
        self.transport.write(text_frame(message.encode()))

    def pause_app_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_app_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
