"""The relay's quick WebSocket framing (server/relay/frames.py) against websockets itself as the oracle.

Each leg reads a whole text message in `FrameReader` and hands every other frame, whole, to websockets'
sans-I/O protocol; a header websockets refuses outright ends the quick framing. `Leg` below wires the two
together exactly as both legs do (`_take_text`, `_take_frame` / `_websocket_reads`, and what follows the
end of quick framing). Fed any stream in any pieces, it must deliver the same messages, answer the same
frames and fail the same way as websockets alone fed the whole stream.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator, Sequence

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from websockets.utils import apply_mask

from server.relay.frames import GIVE_UP, FrameReader, HeaderEnd, cut, masked_text_frame, text_frame

LIMIT = 1 << 20
Heard = tuple[object, ...]


class Leg:
    """One leg's receiving side: `FrameReader` then websockets (quick=True), or websockets alone."""

    def __init__(self, side: Side, limit: int = LIMIT, quick: bool = True) -> None:
        self.ws = Protocol(side, max_size=limit)
        self.reader = FrameReader(masked=side is Side.SERVER, limit=limit) if quick else None
        self.heard: list[Heard] = []
        self.read_quickly = 0
        self._fragments: list[Frame] = []
        self._sent: list[bytes] = []

    def receive(self, data: bytes) -> None:
        if self.reader is None:
            self._websocket_reads(data)
            return
        rest = self.reader.feed(data, self._take_text, self._websocket_reads)
        if rest is not None:
            self.reader = None
            if rest:
                self._websocket_reads(rest)

    def _take_text(self, text: str) -> bool:
        if self.ws.state is not State.OPEN or self.ws.current_size is not None:
            return False
        self.heard.append(("text", text))
        self.read_quickly += 1
        return True

    def _websocket_reads(self, data: bytes) -> bool:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            assert isinstance(event, Frame)
            self._on_frame(event)
        return self.ws.state is State.OPEN and self.ws.parser_exc is None

    def _on_frame(self, frame: Frame) -> None:
        """As uvicorn's handlers and UpstreamSocket._on_frame assemble messages."""
        if frame.opcode in (Opcode.PING, Opcode.PONG):
            self.heard.append((frame.opcode.name, bytes(frame.data)))
            return
        if frame.opcode is Opcode.CLOSE:
            close = Close.parse(bytes(frame.data))
            self.heard.append(("close", close.code, close.reason))
            return
        self._fragments.append(frame)
        if not frame.fin:
            return
        first, data = self._fragments[0], b"".join(bytes(f.data) for f in self._fragments)
        self._fragments = []
        if first.opcode is Opcode.BINARY:
            self.heard.append(("binary", data))
            return
        try:
            self.heard.append(("text", data.decode()))
        except UnicodeDecodeError:
            self.heard.append(("not UTF-8", data))

    def outcome(self) -> tuple[list[Heard], list[Heard], str, int | None, State]:
        """What it delivered, what it answered (read back by websockets), how it ended."""
        self._sent += self.ws.data_to_send()
        peer = Protocol(Side.CLIENT if self.ws.side is Side.SERVER else Side.SERVER, max_size=None)
        peer.receive_data(b"".join(self._sent))
        answered: list[Heard] = [
            (f.opcode.name, bytes(f.data)) for f in peer.events_received() if isinstance(f, Frame)
        ]
        failed = type(self.ws.parser_exc).__name__ if self.ws.parser_exc is not None else ""
        code = self.ws.close_sent.code if self.ws.close_sent is not None else None
        return self.heard, answered, failed, code, self.ws.state


def frame(opcode: Opcode, data: bytes | str, *, masked: bool, fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a peer sends it; `raw` for what websockets would not serialize."""
    payload = data.encode() if isinstance(data, str) else data
    if rsv1 or (opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE) and (len(payload) > 125 or not fin)):
        return raw((0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode, payload, masked)
    return Frame(opcode, payload, fin=fin).serialize(mask=masked)


def raw(head1: int, payload: bytes, masked: bool, length: int | None = None) -> bytes:
    """A frame's bytes as given: any first byte, any length field."""
    n = len(payload) if length is None else length
    flag = 0x80 if masked else 0
    if n < 126:
        header = bytes((head1, flag | n))
    elif n < 65536:
        header = bytes((head1, flag | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((head1, flag | 127)) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = bytes((0x37, 0xFA, 0x21, 0x3D))
    return header + key + apply_mask(payload, key)


def text(data: str, masked: bool, fin: bool = True) -> bytes:
    return frame(Opcode.TEXT, data, masked=masked, fin=fin)


def pieces(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def both_ways(stream: bytes, side: Side, reads: Sequence[bytes], limit: int = LIMIT) -> Leg:
    """Feeds `reads` to a quick leg and the whole stream to websockets alone; they must agree."""
    quick, alone = Leg(side, limit), Leg(side, limit, quick=False)
    for read in reads:
        quick.receive(read)
    alone.receive(stream)
    assert quick.outcome() == alone.outcome(), [len(r) for r in reads]
    return quick


SIDES = pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT], ids=["browser leg", "upstream leg"])


def mixed(masked: bool) -> bytes:
    """Every kind of frame a leg meets, small enough to split at every byte."""
    return b"".join(
        [
            text("hello", masked),
            text("", masked),
            frame(Opcode.BINARY, b"\x00\xff\x81", masked=masked),
            frame(Opcode.PING, b"p?", masked=masked),
            text("é€𝄞 multibyte", masked),
            frame(Opcode.PONG, b"", masked=masked),
            text("frag", masked, fin=False),
            frame(Opcode.PING, b"mid", masked=masked),  # a control frame inside a fragmented message
            frame(Opcode.CONT, "men", masked=masked, fin=False),
            frame(Opcode.CONT, "ted", masked=masked),
            text("x" * 125, masked),
            text("y" * 126, masked),  # the first 16-bit length
            text("after", masked),
            frame(Opcode.CLOSE, Close(1000, "bye").serialize(), masked=masked),
            text("past the close", masked),  # websockets discards it: so must the quick path
        ]
    )


MIXED_HEARD: list[Heard] = [
    ("text", "hello"),
    ("text", ""),
    ("binary", b"\x00\xff\x81"),
    ("PING", b"p?"),
    ("text", "é€𝄞 multibyte"),
    ("PONG", b""),
    ("PING", b"mid"),
    ("text", "fragmented"),
    ("text", "x" * 125),
    ("text", "y" * 126),
    ("text", "after"),
    ("close", 1000, "bye"),
]


# cut: where a frame ends, and which frames it reads.


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
@pytest.mark.parametrize("masked", [True, False])
def test_cut_finds_the_end_of_a_text_frame_of_every_length_encoding(length: int, masked: bool) -> None:
    message = "a" * length
    data = text(message, masked)
    before, after = b"\x8a\x00", text("next", masked)  # a pong before, a frame after: `start` counts
    buffer = before + data + after
    assert cut(buffer, len(before), masked, LIMIT) == (len(before) + len(data), message)
    assert cut(buffer, len(before) + len(data), masked, LIMIT) == (len(buffer), "next")
    header = len(data) - length
    # Any part of the frame: not read, and the end given is past what is there but not past the frame.
    for have in [*range(0, header + 1), header + length // 2, len(data) - 1]:
        if have >= len(data):
            continue
        end, read = cut(before + data[:have], len(before), masked, LIMIT)
        assert read is None
        assert len(before) + have < end <= len(before) + len(data)
        if have >= header:
            assert end == len(before) + len(data)  # the header read: the whole frame's end is known


@pytest.mark.parametrize(
    "message",
    ["é", "€", "𝄞", "日本語のテキスト", "é" * 63, "€" * 42, "𝄞" * 16384 + "!", 'mixed "ü" \u2028 \x00 end'],
)
def test_multibyte_text_is_read_as_websockets_reads_it(message: str) -> None:
    for side in Side:
        masked = side is Side.SERVER
        data = text(message, masked)
        assert cut(data, 0, masked, LIMIT) == (len(data), message)
        leg = both_ways(data, side, [data])
        assert leg.heard == [("text", message)] and leg.read_quickly == 1


NOT_QUICK = {
    "binary": frame(Opcode.BINARY, b"abc", masked=True),
    "ping": frame(Opcode.PING, b"abc", masked=True),
    "pong": frame(Opcode.PONG, b"abc", masked=True),
    "close": frame(Opcode.CLOSE, Close(1001, "away").serialize(), masked=True),
    "first fragment": text("abc", True, fin=False),
    "continuation": frame(Opcode.CONT, b"abc", masked=True),
    "reserved bit 1": frame(Opcode.TEXT, b"abc", masked=True, rsv1=True),
    "reserved bit 2": raw(0xA1, b"abc", True),
    "reserved bit 3": raw(0x91, b"abc", True),
    "unknown opcode": raw(0x83, b"abc", True),
    "truncated UTF-8": raw(0x81, "€".encode()[:2], True),
    "overlong UTF-8": raw(0x81, b"\xc0\xaf", True),
    "UTF-16 surrogate": raw(0x81, b"\xed\xa0\x80", True),
    "beyond U+10FFFF": raw(0x81, b"\xf4\x90\x80\x80", True),
    "stray continuation byte": raw(0x81, b"ok\x80", True),
}


@pytest.mark.parametrize("name", NOT_QUICK)
def test_frames_other_than_a_whole_valid_text_go_whole_to_websockets(name: str) -> None:
    data = NOT_QUICK[name]
    assert cut(data, 0, True, LIMIT) == (len(data), None)
    # Followed by a text message: websockets decides what comes of both, the quick path changes nothing.
    stream = data + text("then", True)
    leg = both_ways(stream, Side.SERVER, [stream])
    if leg.ws.parser_exc is not None:
        assert ("text", "then") not in leg.heard and leg.read_quickly == 0


@pytest.mark.parametrize(
    "masked", [True, False], ids=["client frame to a client", "server frame to a server"]
)
def test_wrong_masking_gives_up_from_the_header_alone_and_websockets_fails_it(masked: bool) -> None:
    wrong = text("sneaky", masked)
    assert cut(wrong[:2], 0, not masked, LIMIT) == (GIVE_UP, None)
    assert cut(wrong, 0, not masked, LIMIT) == (GIVE_UP, None)
    reader_side = Side.CLIENT if masked else Side.SERVER  # the side that expects the other masking
    stream = text("fine", not masked) + wrong + text("after", not masked)
    leg = both_ways(stream, reader_side, [stream])
    assert leg.heard == [("text", "fine")]
    assert leg.outcome()[2:4] == ("ProtocolError", 1002)
    assert leg.reader is None  # quick framing over: websockets read the rest


@pytest.mark.parametrize(
    ("limit", "length"),
    [(100, 101), (100, 125), (1000, 1001), (1000, 65535), (70_000, 70_001), (70_000, 2**63 - 1)],
)
@SIDES
def test_a_frame_over_the_limit_gives_up_from_its_header_and_websockets_fails_it_with_1009(
    side: Side, limit: int, length: int
) -> None:
    masked = side is Side.SERVER
    header = raw(0x81, b"", masked, length=length)
    assert cut(header, 0, masked, limit) == (GIVE_UP, None)
    assert cut(header[:-4] if masked else header, 0, masked, limit) == (GIVE_UP, None)  # no key yet either
    stream = text("fine", masked) + header + b"some of its payload"
    for at in range(len(stream) + 1):
        leg = both_ways(stream, side, pieces(stream, [at]), limit)
        assert leg.heard == [("text", "fine")]
        assert leg.outcome()[2:4] == ("PayloadTooBig", 1009)
    at_limit = text("z" * limit, masked) if limit < 100_000 else b""
    if at_limit:
        assert cut(at_limit, 0, masked, limit) == (len(at_limit), "z" * limit)


@SIDES
def test_a_fragment_within_the_limit_but_over_what_is_left_of_it_is_failed_by_websockets(side: Side) -> None:
    masked = side is Side.SERVER
    stream = (
        text("a" * 60, masked, fin=False) + frame(Opcode.CONT, "b" * 60, masked=masked) + text("c", masked)
    )
    leg = both_ways(stream, side, [stream], limit=100)
    assert leg.heard == [] and leg.outcome()[2:4] == ("PayloadTooBig", 1009)


# Streams in pieces: the quick path and websockets alone deliver the same.


@SIDES
def test_a_mixed_stream_split_at_every_byte_delivers_what_websockets_alone_delivers(side: Side) -> None:
    masked = side is Side.SERVER
    stream = mixed(masked)
    whole = both_ways(stream, side, [stream])
    assert whole.heard == MIXED_HEARD
    assert whole.read_quickly == 6  # every whole text before the close; the fragmented one is websockets'
    assert whole.outcome()[1] == [
        ("PONG", b"p?"),
        ("PONG", b"mid"),
        ("CLOSE", Close(1000, "bye").serialize()),
    ]
    for at in range(1, len(stream)):
        assert both_ways(stream, side, pieces(stream, [at])).heard == MIXED_HEARD
    byte_by_byte = [stream[i : i + 1] for i in range(len(stream))]
    assert both_ways(stream, side, byte_by_byte).heard == MIXED_HEARD


@SIDES
def test_large_frames_split_around_their_headers_and_inside_their_payloads(side: Side) -> None:
    masked = side is Side.SERVER
    sizes = [65535, 65536, 70_000, 126]
    frames = [text(chr(0x41 + n) * size, masked) for n, size in enumerate(sizes)]
    frames.insert(2, frame(Opcode.PING, b"between", masked=masked))
    stream = b"".join(frames)
    edges: list[int] = []
    at = 0
    for data in frames:
        edges += [at + d for d in range(-3, 16)] + [at + len(data) // 2]
        at += len(data)
    expected: list[Heard] = [("text", chr(0x41 + n) * size) for n, size in enumerate(sizes)]
    expected.insert(2, ("PING", b"between"))
    for edge in sorted({e for e in edges if 0 < e < len(stream)}):
        assert both_ways(stream, side, pieces(stream, [edge])).heard == expected
    rng = random.Random(7)
    for _ in range(20):
        cuts = rng.sample(range(1, len(stream)), rng.randint(2, 12))
        assert both_ways(stream, side, pieces(stream, cuts)).heard == expected


@SIDES
def test_after_our_own_close_what_the_peer_still_sends_is_read_by_websockets_once(side: Side) -> None:
    # A goodbye (the relay's `disconnect`, the app's close) leaves websockets CLOSING but still parsing until
    # the peer's close: quick framing hands over at the first frame, and that frame is not read twice.
    masked = side is Side.SERVER
    stream = b"".join(
        [
            text("late", masked),
            frame(Opcode.BINARY, b"bin", masked=masked),
            text("later", masked),
            frame(Opcode.CLOSE, Close(1000, "").serialize(), masked=masked),
        ]
    )
    for at in range(len(stream)):
        quick, alone = Leg(side), Leg(side, quick=False)
        for leg in (quick, alone):
            leg.ws.send_close(1001)
        for read in pieces(stream, [at]):
            quick.receive(read)
        alone.receive(stream)
        assert quick.outcome() == alone.outcome()
        assert quick.heard == [("text", "late"), ("binary", b"bin"), ("text", "later"), ("close", 1000, "")]
        assert quick.read_quickly == 0 and quick.reader is None


def random_frames(rng: random.Random, masked: bool) -> Iterator[bytes]:
    """Frames of every kind, now and then one websockets refuses, in an order that may break the protocol."""
    lengths = [0, 1, 2, 5, 17, 125, 126, 127, 300]
    for _ in range(rng.randint(1, 14)):
        kind = rng.choices(
            ["text", "binary", "ping", "pong", "fragmented", "close", "broken"], [40, 8, 6, 4, 8, 2, 3]
        )[0]
        size = rng.choice(lengths)
        body = "".join(rng.choice("aZ0 é€𝄞\n") for _ in range(size))
        if kind == "text":
            yield text(body, masked)
        elif kind == "binary":
            yield frame(Opcode.BINARY, rng.randbytes(size), masked=masked)
        elif kind in ("ping", "pong"):
            yield frame(
                Opcode.PING if kind == "ping" else Opcode.PONG, rng.randbytes(size % 126), masked=masked
            )
        elif kind == "fragmented":
            parts = [body[i::3] for i in range(3)]
            yield text(parts[0], masked, fin=False)
            if rng.random() < 0.3:
                yield frame(Opcode.PING, b"in", masked=masked)
            if rng.random() < 0.1:
                yield text("interloper", masked)  # a whole text inside a fragmented message: refused
            yield frame(Opcode.CONT, parts[1], masked=masked, fin=False)
            yield frame(Opcode.CONT, parts[2], masked=masked)
        elif kind == "close":
            yield frame(Opcode.CLOSE, Close(1000, "done").serialize(), masked=masked)
        else:
            yield rng.choice(
                [
                    text(body, not masked),
                    raw(0x81, b"", masked, length=LIMIT + 1),
                    raw(0xC1, body.encode(), masked),
                    raw(0x81, body.encode() + b"\xff", masked),
                    raw(0x89, b"p" * 126, masked),  # a control frame too long
                    raw(0x09, b"p", masked),  # a fragmented control frame
                    frame(Opcode.CONT, body, masked=masked),  # a continuation of nothing
                    raw(0x8B, b"", masked),  # opcode 0xB: reserved
                    frame(Opcode.CLOSE, b"\x03\xe8\xff", masked=masked),  # a close reason not UTF-8
                ]
            )


@SIDES
def test_random_streams_in_random_pieces_deliver_what_websockets_alone_delivers(side: Side) -> None:
    masked = side is Side.SERVER
    rng = random.Random(20261201)
    quick_reads = 0
    for _ in range(400):
        stream = b"".join(random_frames(rng, masked))
        cuts = rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 10)))
        quick_reads += both_ways(stream, side, pieces(stream, cuts)).read_quickly
    assert quick_reads > 500  # the quick path did the reading, not websockets alone


# HeaderEnd: the opening head, then frames, in any pieces.


def opening_request() -> bytes:
    client = ClientProtocol(parse_uri("ws://127.0.0.1:8000/socket.io/?EIO=4&transport=websocket"))
    client.send_request(client.connect())
    return b"".join(client.data_to_send())


def opening_response() -> bytes:
    server = ServerProtocol()
    server.receive_data(opening_request())
    (request,) = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    return b"".join(server.data_to_send())


@pytest.mark.parametrize("head", [opening_request(), opening_response()], ids=["request", "response"])
def test_the_end_of_a_head_is_found_wherever_the_reads_split_its_blank_line(head: bytes) -> None:
    stream = head + text("first", False) + b"\r\n\r\n"  # a blank line after the head is not its end
    ends = len(head)

    def found(reads: Sequence[bytes]) -> int:
        """Where in the stream the head ends, by HeaderEnd read by read (as a leg stops at the first)."""
        finder, seen = HeaderEnd(), 0
        for read in reads:
            at = finder.find(read)
            if at >= 0:
                assert 0 < at <= len(read)
                return seen + at
            seen += len(read)
        return -1

    assert found([stream]) == ends
    for at in range(1, len(stream)):
        assert found(pieces(stream, [at])) == ends, at
    window = range(ends - 6, ends + 3)  # every way to cut the blank line in three
    for a in window:
        for b in window:
            if a < b:
                assert found(pieces(stream, [a, b])) == ends, (a, b)
    assert found([stream[i : i + 1] for i in range(len(stream))]) == ends
    assert found([head[:-1]]) == -1


def test_a_near_blank_line_split_across_reads_is_not_the_end() -> None:
    for reads in [[b"GET / HTTP/1.1\r\n", b"\r"], [b"A: b\r\n\r", b"x\r\n"], [b"\r", b"\n\r", b"x\n"]]:
        finder = HeaderEnd()
        assert [finder.find(read) for read in reads] == [-1] * len(reads)
    finder = HeaderEnd()
    assert [finder.find(r) for r in [b"\r", b"\n", b"\r", b"\nrest"]] == [-1, -1, -1, 1]


# Writing: frames websockets reads as the whole text message.


def read_back(reader: Protocol, data: bytes) -> list[tuple[Opcode, bool, bytes]]:
    reader.receive_data(data)
    return [(f.opcode, f.fin, bytes(f.data)) for f in reader.events_received() if isinstance(f, Frame)]


PAYLOADS = [b"", b"a", "é".encode(), b"b" * 125, b"c" * 126, b"d" * 65535, b"e" * 65536, "𝄞".encode() * 20000]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: str(len(p)))
def test_masked_text_frame_is_a_client_frame_websockets_reads(payload: bytes) -> None:
    data = masked_text_frame(payload)
    server = Protocol(Side.SERVER, max_size=None)
    assert read_back(server, data) == [(Opcode.TEXT, True, payload)]
    assert server.parser_exc is None and server.state is State.OPEN
    header = len(data) - len(payload) - 4
    assert data[:header] == Frame(Opcode.TEXT, payload).serialize(mask=True)[:header]
    assert cut(data, 0, True, LIMIT) == (len(data), payload.decode())


def test_masked_text_frames_use_fresh_keys() -> None:
    keys = [masked_text_frame(b"same")[2:6] for _ in range(3000)]  # past two refills of the key pool
    assert len(set(keys)) > 2990  # 32-bit random keys: a rare pair may collide, a reused one would not hide
    assert all(a != b for a, b in itertools.pairwise(keys))
    masked = {masked_text_frame(b"same payload")[6:] for _ in range(100)}
    assert len(masked) > 95  # the payload's bytes on the wire change with the key


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: str(len(p)))
def test_text_frame_is_the_server_frame_websockets_writes_and_reads(payload: bytes) -> None:
    data = text_frame(payload)
    assert data == Frame(Opcode.TEXT, payload).serialize(mask=False)
    client = Protocol(Side.CLIENT, max_size=None)
    assert read_back(client, data) == [(Opcode.TEXT, True, payload)]
    assert client.parser_exc is None


def test_a_forked_process_masks_with_keys_of_its_own() -> None:
    masked_text_frame(b"x")  # the pool is filled
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(write, masked_text_frame(b"x")[2:6])
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    childs = os.read(read, 4)
    os.close(read)
    assert len(childs) == 4 and childs != masked_text_frame(b"x")[2:6]
