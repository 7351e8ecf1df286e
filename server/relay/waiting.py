"""Browser sockets the relay turned away for capacity, kept so the SDK's queue can poll them (S:480-560).

The SDK answers `throwToNoAgent` by polling `checkAvailability` on the same socket, sending the next poll only
once `availabilityResult` answers the last, and on `available: true` it sends `join` again. Nothing upstream
knows these sockets, so the relay answers the polls itself; a socket that stops polling is let go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Longer than the SDK's longest wait between two polls (360 s, S:142): a quiet socket has no queue running.
SILENCE_SECONDS = 400.0
# How long a slot held for an admitted socket waits for its `join`.
JOIN_GRACE_SECONDS = 10.0


@dataclass
class Waiting:
    """One queued socket."""

    sid: str
    slug: str
    query: dict[str, str]
    address: str = ""  # the client address it connected from (its slot is taken once it is admitted)
    admitted: bool = False  # a slot is held for it, until its `join` or JOIN_GRACE_SECONDS
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def token(self) -> str:
        return self.query.get("client", "")


class WaitingRoom:
    """The queued sockets, each with a deadline after which `expire(sid)` is called."""

    def __init__(self, expire: Callable[[str], Any]) -> None:
        self._expire = expire
        self.sockets: dict[str, Waiting] = {}  # by browser socket id
        self.silence_seconds = SILENCE_SECONDS
        self.join_grace_seconds = JOIN_GRACE_SECONDS

    def __len__(self) -> int:
        return len(self.sockets)

    def get(self, sid: str) -> Waiting | None:
        return self.sockets.get(sid)

    def add(self, sid: str, slug: str, query: dict[str, str], address: str = "") -> Waiting:
        entry = self.sockets[sid] = Waiting(sid, slug, query, address)
        self.heard(entry)
        return entry

    def heard(self, entry: Waiting) -> None:
        """A poll arrived (or the socket was just queued): its deadline starts again."""
        self._deadline(entry, self.join_grace_seconds if entry.admitted else self.silence_seconds)

    def admit(self, entry: Waiting) -> None:
        entry.admitted = True
        self._deadline(entry, self.join_grace_seconds)

    def remove(self, sid: str) -> Waiting | None:
        entry = self.sockets.pop(sid, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()
        return entry

    def with_token(self, token: str) -> list[Waiting]:
        return [entry for entry in self.sockets.values() if token and entry.token == token]

    def clear(self) -> None:
        for sid in list(self.sockets):
            self.remove(sid)

    def _deadline(self, entry: Waiting, seconds: float) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        entry.timer = asyncio.get_running_loop().call_later(seconds, self._expire, entry.sid)
