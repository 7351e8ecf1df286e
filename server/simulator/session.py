"""One simulated conversation: its dialogue, voice, media peers and a bounded log of every event."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.simulator.conversation import Dialogue
from server.simulator.media import Voice

log = logging.getLogger("avatar_bff.simulator")
LOG_LIMIT = 500
LOGGED_PAYLOAD_CHARS = 2000

Send = Callable[[str, Any], Awaitable[None]]


# A logged event: time, direction, name, its payload as JSON text (cut at LOGGED_PAYLOAD_CHARS), full length.
# A tuple of plain values, so the garbage collector stops tracking it: with dicts, a bench's worth of logs
# made every full collection take ~80 ms.
LogEntry = tuple[float, str, str, str, int]


def _entry_view(entry: LogEntry) -> dict[str, Any]:
    at, direction, event, text, size = entry
    data = json.loads(text) if size <= LOGGED_PAYLOAD_CHARS else {"truncated": text, "bytes": size}
    return {"t": at, "dir": direction, "event": event, "data": data}


@dataclass
class SimSession:
    transport: str  # "socket" | "iframe"
    send_raw: Send
    dialogue: Dialogue
    query: dict[str, str] = field(default_factory=dict)
    client_id: str = ""
    flow_id: str = ""
    socket_sid: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    voice: Voice = field(default_factory=Voice)
    events: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    peers: list[Any] = field(default_factory=list)
    asr: dict[str, Any] = field(default_factory=dict)  # what introspection shows of the mic path
    asr_peer: Any = None
    fallback_peer: Any = None  # the audio fallback's peer connection (webrtc-create-offer)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    speech_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    available: bool | None = None  # a test's answer to checkAvailability; None: by capacity
    prompted: asyncio.Event = field(default_factory=asyncio.Event)  # a DPP has arrived
    barge_in: asyncio.Event | None = None  # set to cut short what the avatar is saying right now
    created: float = field(default_factory=time.time)
    ended: bool = False

    def log(self, direction: str, event: str, data: Any) -> None:
        text = json.dumps(data, default=str)  # bytes (binary attachments) become their repr: JSON-safe
        self.events.append((time.time(), direction, event, text[:LOGGED_PAYLOAD_CHARS], len(text)))

    async def send(self, event: str, data: Any = None) -> None:
        self.log("out", event, data)
        await self.send_raw(event, data if data is not None else {})

    def spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator: a task of session %s failed", self.id, exc_info=task.exception())

    async def close(self) -> None:
        self.ended = True
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for peer in self.peers:
            await peer.close()
        self.peers.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "query": self.query,
            "client_id": self.client_id,
            "flow_id": self.flow_id,
            "socket_sid": self.socket_sid,
            "dpp": self.dialogue.dpp,
            "asr": self.asr,
            "created": self.created,
            "ended": self.ended,
            "events": [_entry_view(entry) for entry in self.events],
        }
