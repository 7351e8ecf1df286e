"""The relay's quick WebSocket framing (server/relay/frames.py) on both legs, over real loopback sockets.

The far end of each leg is written byte by byte here: the frames a test sends are its own bytes, in as many
TCP writes as it says (TCP_NODELAY and a short pause between writes, so that the relay reads them apart),
while websockets' sans-I/O protocol makes the opening handshake and reads what the relay sends. Messages
must arrive whole, once and in order whatever the split; frames websockets refuses must end the connection
as websockets ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from server.app import create_app
from server.relay.browser_websocket import LeanWebSocketProtocol
from server.relay.sockets import RelayHub
from server.relay.upstream import MAX_MESSAGE
from tests.integration.test_relay import SDK_QUERY, page_session, websocket_upstream
from tests.support import ServerThread, eventually_async, prepared_settings
from tests.unit.test_frames import frame, pieces, raw

PAUSE = 0.01  # seconds between two TCP writes of one test's bytes: the relay reads each on its own
OPEN = '0{"sid":"e","pingInterval":25000,"pingTimeout":20000}'


class Closed(Exception):
    """The other end sent its closing frame (`code`), or closed the TCP connection (None)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


class RawSocket:
    """One end of a WebSocket whose frames the test writes as bytes; `ws` reads what the other end sends."""

    made: ClassVar[list[RawSocket]] = []  # closed after each test (`close_raw_sockets`)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: Protocol) -> None:
        self.reader, self.writer, self.ws = reader, writer, ws
        self.made.append(self)
        self.masked = isinstance(ws, ClientProtocol)
        self.frames: list[Frame] = []
        self.requests: list[Request] = []
        self.controls: list[tuple[str, bytes]] = []  # pings and pongs heard, as they come
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def write(self, data: bytes, cuts: Sequence[int] = ()) -> None:
        """`data` in one TCP write per piece between `cuts`."""
        for n, piece in enumerate(pieces(data, cuts)):
            if n:
                await asyncio.sleep(PAUSE)
            self.writer.write(piece)
            await self.writer.drain()

    def text_frame(self, message: str, fin: bool = True) -> bytes:
        return frame(Opcode.TEXT, message, masked=self.masked, fin=fin)

    def frame(self, opcode: Opcode, data: str | bytes, fin: bool = True) -> bytes:
        return frame(opcode, data, masked=self.masked, fin=fin)

    async def read(self) -> None:
        try:
            data = await self.reader.read(1 << 16)
        except ConnectionResetError:  # closed with bytes of ours unread: closed all the same
            data = b""
        if data:
            self.ws.receive_data(data)
        else:
            self.ws.receive_eof()
        for event in self.ws.events_received():
            if isinstance(event, Frame) and event.opcode in (Opcode.PING, Opcode.PONG):
                self.controls.append((event.opcode.name, bytes(event.data)))
            elif isinstance(event, Frame):
                self.frames.append(event)
            elif isinstance(event, Request):
                self.requests.append(event)
        for chunk in self.ws.data_to_send():  # websockets' pongs, its answer to a close
            if chunk and not self.writer.is_closing():
                self.writer.write(chunk)
        if not data:
            raise Closed(None)

    async def text(self) -> str:
        """The next text message; a closing frame raises `Closed`."""
        while not self.frames:
            await self.read()
        got = self.frames.pop(0)
        if got.opcode is Opcode.CLOSE:
            raise Closed(Close.parse(bytes(got.data)).code)
        assert got.opcode is Opcode.TEXT and got.fin, f"the relay writes a text message as one frame: {got}"
        return bytes(got.data).decode()

    async def controls_heard(self, count: int) -> list[tuple[str, bytes]]:
        while len(self.controls) < count:
            await self.read()
        return self.controls

    async def texts_until_closed(self) -> tuple[list[str], int | None]:
        heard: list[str] = []
        while True:
            try:
                heard.append(await self.text())
            except Closed as closed:
                return heard, closed.code

    async def until_eof(self) -> None:
        with contextlib.suppress(Closed):
            while True:
                await self.read()


@pytest.fixture(autouse=True)
async def close_raw_sockets() -> AsyncIterator[None]:
    yield
    while RawSocket.made:
        writer = RawSocket.made.pop().writer
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def open_browser(server: ServerThread) -> RawSocket:
    """A page's Socket.IO connection on a WebSocket from the start (as the bench's callers connect), past the
    Engine.IO open and the namespace connect."""
    _, token = page_session(server)
    query = httpx.QueryParams(
        {"client": token, "flowId": "demo", "stickyId": secrets.token_hex(8), **SDK_QUERY, "EIO": "4"}
    )
    url = f"ws://127.0.0.1:{server.port}/socket.io/?{query}&transport=websocket"
    ws = ClientProtocol(parse_uri(url), max_size=None)
    browser = RawSocket(*await asyncio.open_connection("127.0.0.1", server.port), ws)
    ws.send_request(ws.connect())
    await browser.write(b"".join(ws.data_to_send()))
    while ws.state is not State.OPEN:
        await browser.read()
    assert (await browser.text()).startswith("0")  # Engine.IO open
    await browser.write(browser.text_frame("40"))
    assert (await browser.text()).startswith("40")  # connected: bridged to the upstream
    return browser


def direct_protocol(hub: RelayHub) -> LeanWebSocketProtocol:
    """The one browser socket's protocol, in direct mode: python-engineio's socket has a direct session
    (`_Session.run` sets it right after `go_direct`), and the protocol has its inbox."""
    sockets = list(hub.sio.eio.sockets.values())
    assert len(sockets) == 1
    session = sockets[0].queue.session
    assert session is not None, "not in direct mode"
    protocol: LeanWebSocketProtocol = session._protocol
    assert protocol.direct is not None
    return protocol


def said(text: str) -> str:
    """What the SDK sends when the visitor types `text`: an Engine.IO message with a Socket.IO event."""
    return "42" + json.dumps(["onTextEntered", {"isFinal": True, "text": text}])


class Recorder:
    """An upstream (on the websockets library) noting what the visitor typed, until the relay hangs up."""

    def __init__(self) -> None:
        self.typed: list[str] = []
        self.gone = asyncio.Event()

    async def __call__(self, ws: ServerConnection) -> None:
        await ws.send('42["onServerConnected",{}]')
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith('42["onTextEntered"'):
                    self.typed.append(json.loads(message[2:])[1]["text"])
        finally:
            self.gone.set()


@contextlib.asynccontextmanager
async def relay_to_recorder(tmp_path: Path) -> AsyncIterator[tuple[ServerThread, RelayHub, Recorder]]:
    recorder = Recorder()
    async with websocket_upstream(recorder) as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url, relay_events_per_second=10_000))
        with ServerThread(app) as server:
            yield server, app.state.relay, recorder


# The browser leg: a server reading masked frames.


async def test_browser_messages_in_any_pieces_reach_upstream_whole_once_and_in_order(tmp_path: Path) -> None:
    async with relay_to_recorder(tmp_path) as (server, hub, recorder), asyncio.timeout(10):
        browser = await open_browser(server)
        assert await browser.text() == '42["onServerConnected",{}]'
        protocol = direct_protocol(hub)  # a WebSocket-only connect is direct from the Engine.IO open on

        split = browser.text_frame(said("split in seven"))
        await browser.write(split, [1, 2, 4, 6, 9, len(split) - 1])  # inside the header, the key, the text
        large = "é" * 35_000  # 70 000 bytes: a 64-bit length
        big = browser.text_frame(said(large))
        await browser.write(big, [1, 2, 5, 9, 13, 40_000])  # inside the 8-byte length, then the key
        medium = browser.text_frame(said("m" * 1000))  # a 16-bit length
        await browser.write(medium, [2, 3, 4])
        await browser.write(browser.frame(Opcode.PING, b"are you there?"))
        whole = said("fragmented")
        fragmented = [
            browser.text_frame(whole[:20], fin=False),
            browser.frame(Opcode.PING, b"between fragments"),  # a control frame may come between them
            browser.frame(Opcode.CONT, whole[20:-5], fin=False),
            browser.frame(Opcode.CONT, whole[-5:]),
        ]
        await browser.write(b"".join(fragmented), [len(fragmented[0]) - 1, len(fragmented[0]) + 3])
        after = [browser.text_frame(said(f"together {n}")) for n in range(3)]
        together = b"".join(after)
        await browser.write(together, [len(after[0]) + len(after[1]) // 2])  # a frame across two reads
        typed = [
            "split in seven",
            large,
            "m" * 1000,
            "fragmented",
            "together 0",
            "together 1",
            "together 2",
        ]
        await eventually_async(lambda: len(recorder.typed), lambda n: n >= len(typed), what="relayed")
        assert recorder.typed == typed
        assert await browser.controls_heard(2) == [
            ("PONG", b"are you there?"),
            ("PONG", b"between fragments"),
        ]
        assert protocol.reader is not None  # quick framing cut every frame above: it never gave up
        await browser.write(browser.frame(Opcode.CLOSE, Close(1000, "").serialize()))
        await browser.until_eof()
        await eventually_async(lambda: hub.open_upstreams, lambda n: n == 0, what="upstream closed")


REFUSED: dict[str, tuple[Callable[[int], bytes], int]] = {
    "an unmasked frame": (lambda b: frame(Opcode.TEXT, said("unmasked"), masked=False), 1002),
    "text that is not UTF-8": (lambda b: raw(0x81, b'42["onTextEntered",{"text":"\xff"}]', True), 1007),
    "a frame over the size limit": (lambda b: raw(0x81, b"42", True, length=b + 1) + b"x" * 100, 1009),
    "a reserved bit set": (lambda b: raw(0xC1, said("compressed?").encode(), True), 1002),
    "a whole text inside a fragmented message": (
        lambda b: (
            frame(Opcode.TEXT, said("start"), masked=True, fin=False)
            + frame(Opcode.TEXT, said("interloper"), masked=True)
        ),
        1002,
    ),
}


@pytest.mark.parametrize("name", REFUSED)
async def test_a_frame_websockets_refuses_closes_the_browser_socket_with_its_code(
    tmp_path: Path, name: str
) -> None:
    make, code = REFUSED[name]
    async with relay_to_recorder(tmp_path) as (server, hub, recorder), asyncio.timeout(5):
        browser = await open_browser(server)
        assert await browser.text() == '42["onServerConnected",{}]'
        protocol = direct_protocol(hub)
        await browser.write(browser.text_frame(said("before")))
        await eventually_async(lambda: recorder.typed, lambda typed: typed == ["before"], what="relayed")
        # The refused frame, and after it in the same write a frame the relay must not read.
        await browser.write(make(server.server.config.ws_max_size) + browser.text_frame(said("after")))
        assert await browser.texts_until_closed() == ([], code)
        assert protocol.reader is None  # quick framing ended: websockets judged the rest
        await browser.until_eof()  # the relay closes the TCP connection
        await asyncio.wait_for(recorder.gone.wait(), 3)  # and then the conversation's upstream
        assert recorder.typed == ["before"]
        assert hub.open_upstreams == 0


# The upstream leg: a client reading unmasked frames.


class RawUpstream:
    """A Socket.IO upstream on a plain asyncio server: the test writes its bytes (`RawSocket`)."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[RawSocket] = asyncio.Queue()
        self._done = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = ServerProtocol(max_size=None)
        await self.accepted.put(RawSocket(reader, writer, ws))
        await self._done.wait()  # the connection stays the test's until the end

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with server:
                yield f"http://127.0.0.1:{port}"
        finally:
            self._done.set()


async def upgrade(upstream: RawSocket) -> bytes:
    """Reads the relay's upgrade request; the 101 answer to write."""
    while not upstream.requests:
        await upstream.read()
    ws = upstream.ws
    assert isinstance(ws, ServerProtocol)
    ws.send_response(ws.accept(upstream.requests.pop()))
    head = b"".join(ws.data_to_send())
    assert head.endswith(b"\r\n\r\n")
    return head


def result(n: int, pad: str = "") -> str:
    return "42" + json.dumps(["availabilityResult", {"n": n, **({"pad": pad} if pad else {})}])


def numbers(messages: Sequence[str]) -> list[int]:
    return [json.loads(m[2:])[1]["n"] for m in messages if m.startswith('42["availabilityResult"')]


@contextlib.asynccontextmanager
async def relay_to_raw_upstream(tmp_path: Path) -> AsyncIterator[tuple[ServerThread, RelayHub, RawUpstream]]:
    upstream = RawUpstream()
    async with upstream.serving() as url:
        app = create_app(prepared_settings(tmp_path, simulator_url=url, relay_events_per_second=10_000))
        with ServerThread(app) as server:
            yield server, app.state.relay, upstream


async def handshake(upstream: RawUpstream, head_cut: int | None, then: Sequence[str]) -> RawSocket:
    """The Socket.IO handshake with the relay: the 101 answer and the Engine.IO open in one TCP write, or in
    two cut `head_cut` bytes before the answer's end; then the namespace reply with `then` in one write."""
    up = await upstream.accepted.get()
    head = await upgrade(up)
    await up.write(head + up.text_frame(OPEN), [] if head_cut is None else [len(head) - head_cut])
    assert await up.text() == "40"
    await up.write(b"".join(up.text_frame(m) for m in ['40{"sid":"s"}', *then]))
    return up


@pytest.mark.parametrize(
    "head_cut",
    [None, 0, 1, 2, 3, 4],
    ids=["101 and open in one write", "open next", "blank line cut 1", "cut 2", "cut 3", "cut before it"],
)
async def test_upstream_messages_in_any_pieces_reach_the_browser_whole_once_and_in_order(
    tmp_path: Path, head_cut: int | None
) -> None:
    async with relay_to_raw_upstream(tmp_path) as (server, hub, upstream), asyncio.timeout(10):
        browser_opened = asyncio.ensure_future(open_browser(server))
        early = ['42["onServerConnected",{}]', result(0)]  # before the browser's connect is acknowledged
        up = await handshake(upstream, head_cut, early)
        browser = await browser_opened
        assert await browser.text() == early[0]
        assert await browser.text() == result(0)
        await browser.write(browser.text_frame(said("go")))  # the browser is live: upstream talks now
        assert (await up.text()).startswith('42["onTextEntered"')

        one = result(1)
        await up.write(
            up.text_frame(one[:25], fin=False)
            + up.frame(Opcode.CONT, one[25:40], fin=False)
            + up.frame(Opcode.PING, b"mid")  # a control frame may come between the fragments
            + up.frame(Opcode.CONT, one[40:]),
            [3, 30],
        )
        await up.write(up.frame(Opcode.PING, b"hello"))
        big = up.text_frame(result(2, "€" * 25_000))  # 75 000 bytes: a 64-bit length
        await up.write(big, [1, 2, 5, 9, 30_000])
        small = up.text_frame(result(3))
        await up.write(small, [1, 3, 7])
        a, b, c, d = (up.text_frame(result(n)) for n in range(4, 8))
        await up.write(a + b + c + d[:4])
        await up.write(d[4:] + up.text_frame(result(8, "x" * 200)), [1])

        heard = [await browser.text() for _ in range(8)]
        assert numbers(heard) == [1, 2, 3, 4, 5, 6, 7, 8]
        assert heard[1] == result(2, "€" * 25_000)
        assert await up.controls_heard(2) == [("PONG", b"mid"), ("PONG", b"hello")]
        bridge = next(iter(hub.bridges.values()))
        assert bridge.upstream._reader is not None  # quick framing read all of it: it never gave up


UPSTREAM_REFUSED: dict[str, tuple[bytes, int | None]] = {
    "a masked frame": (frame(Opcode.TEXT, result(2), masked=True), 1002),  # a client's frame, from a server
    "a whole text inside a fragmented message": (
        frame(Opcode.TEXT, result(2)[:9], masked=False, fin=False)
        + frame(Opcode.TEXT, result(2), masked=False),
        1002,
    ),
    "a frame over the size limit": (raw(0x81, b"42", False, length=MAX_MESSAGE + 1), 1009),
    "a reserved bit set": (raw(0xC1, result(2).encode(), False), 1002),
    "a ping too long": (raw(0x89, b"p" * 126, False), 1002),
    # Not websockets' to refuse: the relay hangs up on it (`_on_frame`), without a closing frame.
    "text that is not UTF-8": (raw(0x81, b'42["availabilityResult","\xff"]', False), None),
}


@pytest.mark.parametrize(
    ("name", "closes"),
    [("a masked frame", True), *((name, False) for name in UPSTREAM_REFUSED)],
    ids=["a masked frame, then upstream closes", *UPSTREAM_REFUSED],
)
async def test_a_bad_frame_from_upstream_ends_the_conversation_and_the_browser_hears_it_at_once(
    tmp_path: Path, name: str, closes: bool
) -> None:
    bad, code = UPSTREAM_REFUSED[name]
    async with relay_to_raw_upstream(tmp_path) as (server, hub, upstream), asyncio.timeout(5):
        browser_opened = asyncio.ensure_future(open_browser(server))
        up = await handshake(upstream, 0, ['42["onServerConnected",{}]'])
        browser = await browser_opened
        assert await browser.text() == '42["onServerConnected",{}]'
        await browser.write(browser.text_frame(said("go")))
        assert (await up.text()).startswith('42["onTextEntered"')
        await up.write(up.text_frame(result(1)))
        assert await browser.text() == result(1)
        await up.write(bad + up.text_frame(result(3)))  # and in the same write a frame that is never read
        with pytest.raises(Closed) as refused:
            await up.text()
        assert refused.value.code == code
        if closes:  # as a server does once it has the client's closing frame
            up.writer.close()
        # The conversation ended (Socket.IO's disconnect, on which the SDK closes the socket), and nothing of
        # what followed the bad frame came before it. Upstream keeping its socket open delays none of it.
        assert await browser.text() == "41"
        await eventually_async(
            lambda: hub.open_upstreams, lambda n: n == 0, what="upstream closed", timeout=2
        )
        assert not hub.bridges
        await up.until_eof()  # the relay closed the socket
