"""The relay's upstream leg: a small Engine.IO 4 / Socket.IO 5 client on one aiohttp WebSocket.

The relay forwards packets still encoded, so all it needs from a client is the handshake, pongs and a goodbye.
A general client (python-socketio's) adds a write queue, a write task and a task per received message on top:
measured here, a fifth of the relay's CPU per event and 12 KiB of its memory per session.
Default namespace and WebSocket transport only, like every upstream the relay talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from server.relay.events import RELAYED_TYPES

# How long a goodbye waits for upstream's closing frame (aiohttp's default, 10 s, would hold a shutdown).
CLOSE_WAIT = aiohttp.ClientWSTimeout(ws_close=1.0)
Forward = Callable[[str | bytes], Awaitable[None]]
Gone = Callable[[], Awaitable[None]]


class UpstreamError(Exception):
    """The upstream could not be reached, refused, or did not speak Socket.IO; the text completes
    "The avatar service …"."""


def socket_url(base: str, path: str, query: dict[str, str]) -> str:
    """`https://host` + query → `wss://host/<path>/?…&EIO=4&transport=websocket`."""
    parts = urlsplit(base)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    full = urlencode({**query, "EIO": "4", "transport": "websocket"})
    return urlunsplit((scheme, parts.netloc, f"{parts.path.rstrip('/')}/{path}/", full, ""))


class UpstreamSocket:
    """One upstream Socket.IO connection: packets go to `forward` in order; `gone` runs if upstream ends."""

    def __init__(self, http: aiohttp.ClientSession, forward: Forward, gone: Gone) -> None:
        self._http = http
        self._forward = forward
        self._gone = gone
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._silence = 45.0  # seconds without a ping before the connection counts as dead
        self.sid = ""  # the Socket.IO id upstream gave this connection
        self.connected = False

    async def connect(self, url: str) -> None:
        try:
            # No permessage-deflate (nor on the browser leg, see `serve`): ~40 KB per idle socket.
            self._ws = ws = await self._http.ws_connect(url, compress=0, timeout=CLOSE_WAIT)
            opened = await ws.receive()
            if opened.type is not aiohttp.WSMsgType.TEXT or opened.data[:1] != "0":
                raise UpstreamError("did not answer like a Socket.IO service")
            handshake = json.loads(opened.data[1:])
            self._silence = (handshake["pingInterval"] + handshake["pingTimeout"]) / 1000
            await ws.send_str("40")  # join the default namespace
            while True:
                reply = await ws.receive()
                if reply.type is not aiohttp.WSMsgType.TEXT:
                    raise UpstreamError("closed the connection during the handshake")
                if reply.data == "2":
                    await ws.send_str("3")
                elif reply.data.startswith("40"):
                    self.sid = json.loads(reply.data[2:])["sid"]
                    break
                elif reply.data.startswith("44"):
                    raise UpstreamError("refused the connection")
        except (aiohttp.ClientError, OSError):
            raise UpstreamError("is unreachable") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamError("did not answer like a Socket.IO service") from None
        self.connected = True
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                message = await ws.receive(timeout=self._silence)
                if message.type is aiohttp.WSMsgType.BINARY:
                    await self._forward(message.data)  # an attachment of the packet before it
                    continue
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break  # closed or broken
                data: str = message.data
                if data[:1] == "4":  # an Engine.IO message carries a Socket.IO packet
                    if data[1:2] in RELAYED_TYPES:
                        await self._forward(data[1:])
                    elif data[1:2] == "1":  # the server left the namespace
                        break
                elif data == "2":
                    await ws.send_str("3")
                elif data[:1] == "1":  # Engine.IO close
                    break
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # silent too long, or the connection broke: both mean gone
        finally:  # whatever ended the loop, the browser must hear of it
            self.connected = False
            await ws.close()
            if not self._closing:
                await self._gone()

    async def send(self, data: str | bytes) -> None:
        """Send one encoded Socket.IO packet (text) or one of its attachments (bytes)."""
        if not self.connected or self._ws is None:
            raise ConnectionError("upstream is not connected")
        if isinstance(data, str):
            await self._ws.send_str("4" + data)
        else:
            await self._ws.send_bytes(data)

    async def disconnect(self) -> None:
        """Leave politely and close; safe to call more than once, and from `gone`."""
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is None:
            return
        if self.connected:
            self.connected = False
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await ws.send_str("41")
        await ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            await self._reader
