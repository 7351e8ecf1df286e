"""The relay's upstream leg: a small Engine.IO 4 / Socket.IO 5 client on one WebSocket.

The relay forwards packets still encoded, so all it needs from a client is the handshake, pongs and a goodbye.
The WebSocket is websockets' sans-I/O protocol driven straight from an asyncio transport: an idle connection
holds no task, no queue and no read buffer beyond the parser's, just one timer for silence. Measured here, a
general client cost far more per idle relayed session: python-socketio's (write queue, write task, a task per
received message) 12 KiB, and after it aiohttp's WebSocket (response, connection, reader task) 11 KiB.
Default namespace and WebSocket transport only, like every upstream the relay talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Literal, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from server.relay.events import RELAYED_TYPES
from server.relay.frames import FrameReader, HeaderEnd, masked_text_frame

log = logging.getLogger("avatar_bff.relay")

CLOSE_WAIT = 1.0  # seconds a goodbye waits for upstream's closing frame before the socket is cut
MAX_MESSAGE = 4 * 1024 * 1024  # like the browser leg (`serve`)
GONE = "\0gone"  # ends the inbox; no packet starts with NUL
Forward = Callable[[str | bytes], Awaitable[None]]
Gone = Callable[[], Awaitable[None]]
ForwardNow = Callable[[str], bool]


class UpstreamError(Exception):
    """The upstream could not be reached, refused, or did not speak Socket.IO; the text completes
    "The avatar service …"."""


def socket_url(base: str, path: str, query: dict[str, str]) -> str:
    """`https://host` + query → `wss://host/<path>/?…&EIO=4&transport=websocket`."""
    parts = urlsplit(base)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    full = urlencode({**query, "EIO": "4", "transport": "websocket"})
    return urlunsplit((scheme, parts.netloc, f"{parts.path.rstrip('/')}/{path}/", full, ""))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The system's trusted CAs, loaded once: a context per connection would cost milliseconds each."""
    return ssl.create_default_context()


class UpstreamSocket(asyncio.Protocol):
    """One upstream Socket.IO connection: packets go to `forward` in order; `gone` runs if upstream ends.

    Engine.IO's own traffic (pings, closes) is answered as it is read. Packets for the browser wait in a
    short inbox that a task drains only while there is something in it.
    """

    def __init__(self, forward: Forward, gone: Gone, forward_now: ForwardNow | None = None) -> None:
        self._forward = forward
        self._forward_now = forward_now  # a packet forwarded at once, in the read; False: `forward` takes it
        self._gone = gone
        self._ws: ClientProtocol | None = None
        # Quick framing (`frames`): `_head` until the answer to our upgrade request has been read, then
        # `_reader`; both None: websockets reads everything.
        self._head: HeaderEnd | None = HeaderEnd()
        self._reader: FrameReader | None = None
        self._transport: asyncio.Transport | None = None
        self._inbox: list[str | bytes] = []  # handshake replies while connecting, then packets for `forward`
        self._fragments: list[Frame] = []  # of a message that came in several frames
        self._waiters: list[asyncio.Future[None]] = []  # connect(), send() or disconnect(), until news
        self._pump: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = 0.0  # loop time of the last data from upstream
        self._silence = 45.0  # seconds without a word before the connection counts as dead
        self._paused = False  # the transport's write buffer is full
        self._closing = False  # disconnect() was called: `gone` is not for us
        self._lost = False
        self._error = ""
        self._state: Literal["connecting", "open", "ended"] = "connecting"
        self._loop = asyncio.get_running_loop()
        self.sid = ""  # the Socket.IO id upstream gave this connection

    @property
    def connected(self) -> bool:
        return self._state == "open"

    async def connect(self, url: str) -> None:
        try:
            uri = parse_uri(url)
        except InvalidURI:
            raise UpstreamError("is not configured with a valid address") from None
        # No permessage-deflate (nor on the browser leg, see `serve`): ~40 KB per idle socket.
        self._ws = ClientProtocol(uri, max_size=MAX_MESSAGE)
        self._ws.send_request(self._ws.connect())
        loop = asyncio.get_running_loop()
        try:
            context = tls_context() if uri.secure else None
            await loop.create_connection(lambda: self, uri.host, uri.port, ssl=context)
            opened = await self._receive()
            if not isinstance(opened, str) or opened[:1] != "0":
                raise UpstreamError("did not answer like a Socket.IO service")
            handshake = json.loads(opened[1:])
            self._silence = (handshake["pingInterval"] + handshake["pingTimeout"]) / 1000
            self._send_text("40")  # join the default namespace
            while True:
                reply = await self._receive()
                if not isinstance(reply, str):
                    raise UpstreamError("did not answer like a Socket.IO service")
                if reply == "2":
                    self._send_text("3")
                elif reply.startswith("40"):
                    self.sid = json.loads(reply[2:])["sid"]
                    break
                elif reply.startswith("44"):
                    raise UpstreamError("refused the connection")
        except ssl.SSLCertVerificationError:
            raise UpstreamError("presented a TLS certificate this server does not trust") from None
        except OSError:
            raise UpstreamError("is unreachable") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamError("did not answer like a Socket.IO service") from None
        if self._state != "connecting" or self._lost:  # it hung up right after letting us in
            raise UpstreamError("closed the connection during the handshake")
        self._state = "open"
        early, self._inbox = self._inbox, []
        for message in early:  # what came in the same read as the namespace reply
            self._on_message(message)
        self._timer = loop.call_at(self._heard + self._silence, self._check_silence)

    async def _receive(self) -> str | bytes:
        """The next message while connecting."""
        while not self._inbox:
            if self._lost or self._error or self._state != "connecting":
                raise UpstreamError(self._error or "closed the connection during the handshake")
            await self._wait()
        return self._inbox.pop(0)

    async def send(self, data: str | bytes) -> None:
        """Send one encoded Socket.IO packet (text) or one of its attachments (bytes)."""
        self.send_nowait(data)
        while self._paused and self.connected:  # upstream reads slower than the browser talks
            await self._wait()

    def ready(self) -> bool:
        """Open, and upstream keeps up: `send` would not wait."""
        return self.connected and not self._paused and self._writable()

    def send_nowait(self, data: str | bytes) -> None:
        """`send` without waiting for upstream to read: for a caller that checked `ready`."""
        if not (self.connected and self._writable()):
            raise ConnectionError("upstream is not connected")
        assert self._ws is not None and self._transport is not None
        if isinstance(data, str):
            self._transport.write(masked_text_frame(("4" + data).encode()))
        else:
            self._ws.send_binary(data)
            self._flush()

    async def disconnect(self) -> None:
        """Leave politely and close; safe to call more than once, and from `gone`."""
        was_open = self.connected
        self._closing = True
        self._state = "ended"  # nothing more is delivered
        self._inbox.clear()
        if self._timer is not None:
            self._timer.cancel()
        if was_open and self._writable():
            assert self._ws is not None
            self._send_text("41")
            self._ws.send_close(1000)
            self._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    while not self._lost:
                        await self._wait()
        if self._transport is not None and not self._lost:
            self._transport.abort()
        if self._pump is not None and self._pump is not asyncio.current_task():
            await self._pump

    # asyncio.Protocol: called by the transport.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one without subclassing it
        self._flush()  # the opening handshake request

    def data_received(self, data: bytes) -> None:
        self._heard = self._loop.time()  # not get_running_loop(): on Python 3.11 it costs a getpid() call
        if self._reader is not None:
            self._read_frames(data)
        elif self._head is not None:
            self._read_head(data)
        else:
            self._websocket_reads(data)
        self._wake()

    def _read_head(self, data: bytes) -> None:
        assert self._head is not None and self._ws is not None
        end = self._head.find(data)
        if end < 0:
            self._websocket_reads(data)
            return
        self._head = None
        self._websocket_reads(data[:end])
        if self._ws.state is State.OPEN:  # upgraded: the frames are cut here from now on
            self._reader = FrameReader(masked=False, limit=MAX_MESSAGE)
            self._read_frames(data[end:])
        elif end < len(data):
            self._websocket_reads(data[end:])

    def _read_frames(self, data: bytes) -> None:
        assert self._reader is not None
        rest = self._reader.feed(data, self._take_text, self._websocket_reads)
        if rest is not None:  # websockets reads everything from here on
            self._reader = None
            if rest:
                self._websocket_reads(rest)

    def _take_text(self, text: str) -> bool:
        assert self._ws is not None
        if self._ws.state is not State.OPEN or self._ws.current_size is not None:
            return False  # closing, or inside a fragmented message: websockets judges it
        self._on_message(text)
        return True

    def _websocket_reads(self, data: bytes) -> bool:
        """websockets reads `data`; False once it stopped reading frames (closed or failed)."""
        assert self._ws is not None
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
            elif self._ws.handshake_exc is not None:  # the HTTP answer to our upgrade request
                refused = isinstance(self._ws.handshake_exc, InvalidStatus)
                self._error = (
                    "refused the connection" if refused else "did not answer like a Socket.IO service"
                )
        self._flush()  # pongs to WebSocket pings, the answer to a closing frame
        if self._ws.parser_exc is not None:
            # websockets failed the connection (a bad frame; its closing frame is written above) and reads
            # no more: waiting for upstream to close the socket would leave the browser hearing nothing.
            if self._transport is not None and not self._transport.is_closing():
                log.warning("relay: upstream broke the WebSocket protocol (%s); closing", self._ws.parser_exc)
                self._hang_up()
            return False
        return self._ws.state is State.OPEN

    def eof_received(self) -> None:
        if self._ws is not None:
            self._ws.receive_eof()
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
        self._end()
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # Inside.

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:  # acknowledged by the sans-I/O protocol; upstream closes the socket
            self._end()
            return
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # pings are answered by the sans-I/O protocol
        if not frame.fin or self._fragments:
            self._fragments.append(frame)
            if not frame.fin:
                return
            frame = Frame(self._fragments[0].opcode, b"".join(part.data for part in self._fragments))
            self._fragments.clear()
        payload = bytes(frame.data)
        if frame.opcode is not Opcode.TEXT:
            self._on_message(payload)
            return
        try:
            self._on_message(payload.decode())
        except UnicodeDecodeError:  # not Socket.IO, nor even WebSocket: nothing after it can be trusted
            log.warning("relay: upstream sent text that is not UTF-8; closing")
            self._hang_up()

    def _on_message(self, data: str | bytes) -> None:
        if self._state != "open":
            if self._state == "connecting" and not self._closing:
                self._inbox.append(data)  # for connect()
            return
        if isinstance(data, bytes):
            self._deliver(data)  # an attachment of the packet before it
        elif data[:1] == "4":  # an Engine.IO message carries a Socket.IO packet
            if data[1:2] in RELAYED_TYPES:
                self._deliver(data[1:])
            elif data[1:2] == "1":  # the server left the namespace
                self._hang_up()
        elif data == "2":
            self._send_text("3")
        elif data[:1] == "1":  # Engine.IO close
            self._hang_up()

    def _hang_up(self) -> None:
        """Upstream said goodbye: close our side too."""
        self._end()
        assert self._transport is not None
        self._transport.close()

    def _end(self) -> None:
        """Upstream is gone; unless we closed it ourselves, the browser must hear of it."""
        if self.connected and not self._closing:
            self._deliver(GONE)
        self._state = "ended"

    def _deliver(self, item: str | bytes) -> None:
        if (
            self._pump is None
            and self._forward_now is not None
            and isinstance(item, str)
            and item is not GONE
        ):
            try:
                if self._forward_now(item):
                    return  # forwarded in this read: no task, nothing was waiting before it
            except Exception:  # as in `_drain`
                log.exception("relay: a packet from upstream could not be delivered; closing")
                if self.connected:
                    self._hang_up()
                return
        self._inbox.append(item)
        if self._pump is None:
            self._pump = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._inbox:
                item = self._inbox.pop(0)
                try:
                    await (self._gone() if item is GONE else self._forward(item))
                except Exception:  # a fault on our side must not leave the browser talking to no one
                    log.exception("relay: a packet from upstream could not be delivered; closing")
                    if self.connected:
                        self._hang_up()  # `gone` is next in the inbox
        finally:
            self._pump = None

    def _check_silence(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._heard + self._silence
        if loop.time() >= due:  # dead or black-holed
            self._end()
            assert self._transport is not None
            self._transport.abort()
        else:
            self._timer = loop.call_at(due, self._check_silence)

    def _writable(self) -> bool:
        """Open at both levels: ours, and the WebSocket's (which closes first when a frame is bad)."""
        return (
            self._ws is not None
            and self._ws.state is State.OPEN
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def _send_text(self, text: str) -> None:
        if not self._writable():
            return  # a pong or goodbye to a socket that is closing: nobody is listening
        assert self._transport is not None
        # Every use of websockets' protocol is followed by `_flush`: nothing of it waits before this frame.
        self._transport.write(masked_text_frame(text.encode()))

    def _flush(self) -> None:
        assert self._ws is not None
        if self._transport is None or self._transport.is_closing():
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                self._transport.write(chunk)
            elif self._transport.can_write_eof():
                self._transport.write_eof()

    async def _wait(self) -> None:
        """Until the next read, drained write buffer or loss of the connection."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
