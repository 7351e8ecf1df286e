"""Quick WebSocket framing for the relay's two legs, beside websockets' sans-I/O protocol.

Nearly every frame the relay carries is one whole text message. `cut` finds where each frame ends and reads
that one shape itself (~0.5 µs instead of ~3.5 µs through websockets' generator parser); every other frame
(ping, pong, close, binary, a fragment, bad UTF-8, reserved bits) is handed whole to websockets, whose parser
is therefore always at a frame boundary and judges those as it always did. A header websockets would refuse
outright (wrong masking, over the size limit) ends the quick framing: websockets then gets every byte from
that frame on and fails the connection itself. Writing is the same split: `text_frame` for a whole text
message, websockets for anything else.
"""

from __future__ import annotations

import os
from collections.abc import Callable

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

GIVE_UP = -1
TEXT_WHOLE = 0x81  # FIN, no reserved bits, opcode 1


def cut(buffer: bytes, start: int, masked: bool, limit: int) -> tuple[int, str | None]:
    """The frame at `buffer[start:]`: (where it ends, its text if it is a whole text message read here).

    The end lies past `len(buffer)` when the frame is not all there yet; then it is where the bytes known to
    be needed end (the header first). `GIVE_UP`: a header websockets refuses. Text None: websockets reads it.
    """
    have = len(buffer)
    at = start + 2
    if have < at:
        return at, None
    head1 = buffer[start]
    head2 = buffer[start + 1]
    length = head2 & 0x7F
    if length == 126:
        if have < at + 2:
            return at + 2, None
        length = int.from_bytes(buffer[at : at + 2], "big")
        at += 2
    elif length == 127:
        if have < at + 8:
            return at + 8, None
        length = int.from_bytes(buffer[at : at + 8], "big")
        at += 8
    if length > limit or bool(head2 & 0x80) is not masked:
        return GIVE_UP, None
    key = at
    if masked:
        at += 4
    end = at + length
    if have < end or head1 != TEXT_WHOLE:
        return end, None
    payload = buffer[at:end]
    if masked:
        payload = apply_mask(payload, buffer[key:at])
    try:
        return end, payload.decode()
    except UnicodeDecodeError:  # websockets and uvicorn refuse it their way (close 1007)
        return end, None


def _long_header(first: int, length: int) -> bytes:
    if length < 65536:
        return bytes((TEXT_WHOLE, first | 126)) + length.to_bytes(2, "big")
    return bytes((TEXT_WHOLE, first | 127)) + length.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    """A server's frame of one whole text message (UTF-8 `payload`): not masked."""
    length = len(payload)
    return (bytes((TEXT_WHOLE, length)) if length < 126 else _long_header(0, length)) + payload


class _MaskKeys:
    """Masking keys for a client's frames, from the OS's random source, 4 KiB per system call."""

    __slots__ = ("at", "pool")

    def __init__(self) -> None:
        self.pool = b""
        self.at = 4096


_keys = _MaskKeys()
# A process forked from this one must not reuse the keys left in the pool.
os.register_at_fork(after_in_child=lambda: setattr(_keys, "at", 4096))


def masked_text_frame(payload: bytes) -> bytes:
    """A client's frame of one whole text message: masked, with a fresh random key."""
    keys = _keys
    if keys.at >= 4096:
        keys.pool, keys.at = os.urandom(4096), 0
    key = keys.pool[keys.at : keys.at + 4]
    keys.at += 4
    length = len(payload)
    header = bytes((TEXT_WHOLE, 0x80 | length)) if length < 126 else _long_header(0x80, length)
    return header + key + apply_mask(payload, key)


class FrameReader:
    """Cuts one connection's received bytes into frames, holding a frame that is not all there yet."""

    __slots__ = ("_held", "_need", "limit", "masked")

    def __init__(self, masked: bool, limit: int) -> None:
        self.masked = masked  # a server's reader: the peer's frames must be masked
        self.limit = limit
        # The start of a frame still coming, in one buffer (a list of reads would let a peer sending a
        # frame a byte at a time cost ~40 bytes of memory per byte).
        self._held: bytearray | None = None
        self._need = 0  # the bytes it must reach before the frame is cut again

    def feed(
        self, data: bytes, take_text: Callable[[str], bool], take_frame: Callable[[bytes], bool]
    ) -> bytes | None:
        """Each whole text message goes to `take_text` (False: it cannot take it now), any other frame to
        `take_frame` (False: websockets stopped reading frames). None, or the bytes websockets reads from now
        on: the quick framing is over for this connection."""
        held = self._held
        if held is not None:
            held += data
            if len(held) < self._need:
                return None
            data, self._held = bytes(held), None
        start, have = 0, len(data)
        while start < have:
            end, text = cut(data, start, self.masked, self.limit)
            if end == GIVE_UP:
                return data[start:]
            if end > have:
                self._held = bytearray(data[start:])
                self._need = end - start
                return None
            if (text is None or not take_text(text)) and not take_frame(data[start:end]):
                return data[end:]
            start = end
        return None


class HeaderEnd:
    """Finds where an HTTP head (request or response, no body) ends in a stream read piece by piece."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""  # the last 3 bytes seen, for a blank line split across reads

    def find(self, data: bytes) -> int:
        """Where the head ends in `data` (the index past its blank line), or -1 when not in it."""
        seen = self._tail + data
        found = seen.find(b"\r\n\r\n")
        if found < 0:
            self._tail = seen[-3:]
            return -1
        return found + 4 - len(self._tail)
