"""Conversations driven the way a hosted page and the Socket SDK drive them, for the failover test and faults.

Each `Conversation` loads the hosted page (for its page token), connects python-socketio with the SDK's
query and reconnect policy, answers the avatar's handshake as the SDK does, types a reply a while after each
thing the avatar says, and sends every line it sees to the transcript endpoint the way
static/js/transcript-sender.js does: numbered from 1, kept until the server acknowledges them with
`highest_seq`, and resent after any failure. What it saw and what was acknowledged are kept for checking.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import socketio
from sqlalchemy import select

from server.db import Database
from server.models import Conversation as ConversationRow
from server.models import TranscriptEntry

SDK_QUERY = {"billed_client": "", "debugMode": "true", "ks": "", "level": "published"}
FLUSH_SECONDS = 0.5
FINAL_REFUSALS = {400, 401, 403, 404, 409, 413}  # as the page's sender: resending cannot change these
# The SDK's own reconnect after the server hangs up or refuses (ReconnectStrategy): 5 tries, 2 s doubling.
SDK_RECONNECT_ATTEMPTS = 5
SDK_RECONNECT_BASE_SECONDS = 1.0


class SdkLikeClient(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio's client, waiting for the server's connect answer as long as socket.io-client does.

    Its reconnect gives the answer 1 s, then drops the connection and starts over: under load that becomes a
    storm of half-made connections the SDK (socket.io-client: 20 s) never makes.
    """

    async def connect(self, *args: Any, wait_timeout: float = 20, **kwargs: Any) -> None:
        await super().connect(*args, wait_timeout=wait_timeout, **kwargs)


@dataclass
class Line:
    seq: int
    role: str
    text: str
    timestamp: str

    def entry(self) -> dict[str, object]:
        return {"seq": self.seq, "role": self.role, "text": self.text, "timestamp": self.timestamp}


@dataclass
class Conversation:
    """One visitor: page view, SDK socket, transcript sender."""

    base_url: str
    http: httpx.AsyncClient
    slug: str = "demo"
    think_seconds: float = 1.0  # between the avatar finishing and the visitor's reply
    replies: int = 3  # replies typed, at most, before saying goodbye
    hold: asyncio.Event | None = None  # when given, the visitor types nothing until it is set
    session_id: str = ""
    token: str = ""
    lines: list[Line] = field(default_factory=list)
    acknowledged: int = 0  # the server's highest_seq: every line up to it is stored
    connects: int = 0
    instances: list[str] = field(default_factory=list)  # the instance id of each connect, in order
    ended: bool = False
    refused: str = ""  # the last connect error the SDK would show
    errors: list[str] = field(default_factory=list)
    greeted: asyncio.Event = field(default_factory=asyncio.Event)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _typed: int = 0
    _turn: asyncio.Task[None] | None = None
    _reconnecting: asyncio.Task[None] | None = None
    _attempts: int = 0  # the SDK's reconnect attempts since the conversation was last ready

    def __post_init__(self) -> None:
        self.client = self._new_client()

    def _new_client(self) -> SdkLikeClient:
        """A socket as the SDK's connect() makes one: socket.io-client's defaults (reconnect for ever, 1 s
        doubling to 5 s, half of it random); only the newest socket's events count."""
        client = SdkLikeClient(
            reconnection=True, reconnection_delay=1, reconnection_delay_max=5, randomization_factor=0.5
        )

        def current() -> bool:
            return client is self.client

        async def on_connect() -> None:
            if current():
                self.connects += 1
                self.refused = ""
                self.instances.append(client.eio.sid.partition(".")[0] if client.eio.sid else "")

        async def on_refused(data: Any = None) -> None:
            if current():
                self.refused = data.get("message", "") if isinstance(data, dict) else str(data)

        async def on_disconnect(reason: Any = None) -> None:
            if current():
                await self._on_disconnect(reason)

        async def on_event(event: str, *args: Any) -> None:
            if current():
                await self._on_event(event, *args)

        client.on("connect", on_connect)
        client.on("connect_error", on_refused)
        client.on("disconnect", on_disconnect)
        client.on("*", on_event)
        return client

    @property
    def instance(self) -> str:
        return self.instances[-1] if self.instances else ""

    async def open_page(self, attempts: int = 20) -> None:
        """GET the hosted page (through the balancer) for this visitor's session token."""
        for _ in range(attempts):
            try:
                response = await self.http.get(f"{self.base_url}/a/{self.slug}", params={"first_name": "Ana"})
                if response.status_code == 200:
                    config = json.loads(response.text.split('id="avatar-config">')[1].split("</script>")[0])
                    self.session_id, self.token = config["session"]["id"], config["session"]["token"]
                    return
                self.errors.append(f"page answered {response.status_code}")
            except httpx.HTTPError as exc:
                self.errors.append(f"page: {exc!r}")
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the hosted page did not load: {self.errors[-1:]}")

    async def run(self, limit: float = 90) -> None:
        """Talk until the avatar ends the call (or the visitor says goodbye), then send the last lines."""
        await self.open_page()
        sender = asyncio.create_task(self._send_lines())
        try:
            await self._connect()
            await asyncio.wait_for(self._done.wait(), limit)
        finally:
            for task in (self._turn, self._reconnecting):
                if task is not None:
                    task.cancel()
            self._done.set()
            await self.client.shutdown()
            sender.cancel()
        await self.flush(final=True)

    # The SDK's side of the protocol

    async def _connect(self) -> None:
        """The SDK's connect(): the old socket closed (its retries stop), a new one with a new stickyId."""
        await self.client.shutdown()
        self.client = self._new_client()
        query = {"client": self.token, "flowId": self.slug, "stickyId": f"{random.getrandbits(64):016x}"}
        url = f"{self.base_url}/?{httpx.QueryParams({**query, **SDK_QUERY})}"
        await self.client.connect(url, socketio_path="socket.io")

    async def _on_disconnect(self, reason: Any = None) -> None:
        """Any hang-up but our own (the relay lost upstream, a dropped transport, a dead instance): the SDK's
        own reconnect, a new socket after its back-off. Meanwhile socket.io retries the old one, which the
        relay may refuse as abandoned."""
        if self.ended or self._done.is_set() or reason == self.client.reason.CLIENT_DISCONNECT:
            return
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._sdk_reconnect())

    async def _sdk_reconnect(self) -> None:
        while self._attempts < SDK_RECONNECT_ATTEMPTS:
            self._attempts += 1
            delay = min(SDK_RECONNECT_BASE_SECONDS * 2**self._attempts * random.uniform(0.85, 1.15), 30)
            await asyncio.sleep(delay)
            if self.ended or self._done.is_set():
                return
            try:
                await self._connect()
                return
            except socketio.exceptions.ConnectionError as exc:
                self.errors.append(f"reconnect: {exc}")
        self.errors.append("reconnect: gave up after the SDK's attempts")
        self._done.set()

    async def _on_event(self, event: str, *args: Any) -> None:
        payload = args[0] if args and isinstance(args[0], dict) else {}
        if event == "onServerConnected":
            await self.client.emit(
                "isValidSession", {"client": self.token, "flowId": self.slug, "room": "r1"}
            )
            await self.client.emit("join", {"client": self.token, "room": "r1"})
        elif event == "joinComplete":
            await self.client.emit("stvNewSession", {"client": self.token, "room": "r1"})
        elif event == "askPermissions":  # the browser grants the microphone: ready, as the SDK counts it
            await self.client.emit("approvedPermissions", {})
            self._attempts = 0
        elif event == "agentTurnToTalk" and isinstance(payload.get("userTranscription"), str):
            self._line("User", payload["userTranscription"])
        elif event == "stvFinishedTalking" and isinstance(payload.get("agentContent"), str):
            self._line("Avatar", payload["agentContent"])
            self.greeted.set()
            if self._turn is not None:
                self._turn.cancel()
            self._turn = asyncio.create_task(self._reply_later())
        elif event in ("conversationEnded", "conversationTimeExpired"):
            self.ended = True
            self._done.set()

    async def _reply_later(self) -> None:
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(self.think_seconds * random.uniform(0.8, 1.2))
        # The page has sent what it heard by the time the visitor answers (the page's 1 s flush, less a
        # race): lines then race the end of the call only at its very end.
        await self.flush()
        if self.ended or not self.client.connected:
            return  # after a reconnect the avatar greets again, and this visitor answers that
        self._typed += 1
        text = "bye" if self._typed > self.replies else f"tell me more, part {self._typed}"
        await self.client.emit("onTextEntered", {"isSpeechStart": True, "isFinal": False, "text": ""})
        await self.client.emit("onTextEntered", {"isFinal": True, "text": text})

    # The page's transcript sender

    def _line(self, role: str, text: str) -> None:
        stamp = datetime.now(UTC).isoformat()
        self.lines.append(Line(len(self.lines) + 1, role, text, stamp))

    def pending(self) -> list[Line]:
        return [line for line in self.lines if line.seq > self.acknowledged]

    async def _send_lines(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    def in_time(self) -> list[Line]:
        """Lines the page had to send before the visitor's last reply: all but the last exchange."""
        last_reply = max(
            (line.seq for line in self.lines if line.role == "User"), default=len(self.lines) + 1
        )
        return [line for line in self.lines if line.seq < last_reply]

    async def flush(self, final: bool = False, seconds: float = 30) -> None:
        """Send what is not acknowledged yet; on a failure wait and resend (the page's retry)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            entries = [line.entry() for line in self.pending()[:200]]
            if not entries and not final:
                return
            try:
                response = await self.http.post(
                    f"{self.base_url}/api/v1/page/transcript",
                    json={"token": self.token, "entries": entries, "final": final and len(entries) < 200},
                )
            except httpx.HTTPError as exc:
                self.errors.append(f"transcript: {exc!r}")
            else:
                if response.status_code == 200:
                    self.acknowledged = max(self.acknowledged, int(response.json()["highest_seq"]))
                    if not self.pending():
                        return
                    continue
                self.errors.append(f"transcript answered {response.status_code}: {response.text[:200]}")
                if response.status_code in FINAL_REFUSALS:
                    return
            await asyncio.sleep(FLUSH_SECONDS * 2)


@dataclass
class Outcome:
    conversations: list[Conversation]
    seconds: float

    @property
    def ended(self) -> int:
        return sum(1 for c in self.conversations if c.ended)

    @property
    def lines(self) -> int:
        return sum(len(c.lines) for c in self.conversations)

    @property
    def acknowledged(self) -> int:
        return sum(c.acknowledged for c in self.conversations)

    def moved(self, from_instance: str) -> list[Conversation]:
        """Conversations that began on `from_instance` and went on elsewhere."""
        return [
            c
            for c in self.conversations
            if c.instances[:1] == [from_instance] and c.instance != from_instance
        ]

    def summary(self) -> str:
        reconnected = sum(1 for c in self.conversations if c.connects > 1)
        failed = [c for c in self.conversations if not c.ended]
        return (
            f"{len(self.conversations)} conversations in {self.seconds:.1f} s: {self.ended} ended cleanly, "
            f"{reconnected} reconnected, {self.lines} lines seen, {self.acknowledged} acknowledged"
            + (
                f"; not ended: {[(c.session_id, c.errors[-2:], c.refused) for c in failed[:3]]}"
                if failed
                else ""
            )
        )


async def wait_until(condition: Any, *, seconds: float, what: str) -> None:
    """Poll `condition()` until it is true; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {seconds} s")
        await asyncio.sleep(0.1)


async def talk(
    base_url: str,
    count: int,
    *,
    spread_seconds: float = 3.0,
    think_seconds: float = 1.0,
    replies: int = 3,
    limit: float = 60,
    during: Any = None,
    hold: asyncio.Event | None = None,
) -> Outcome:
    """Run `count` conversations, started over `spread_seconds`, each given `limit` seconds to end.

    `during(conversations)` (a coroutine function) runs alongside, to make a fault at the right moment;
    visitors type nothing until `hold` is set."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=15, limits=limits) as http:
        conversations = [
            Conversation(base_url, http, think_seconds=think_seconds, replies=replies, hold=hold)
            for _ in range(count)
        ]

        async def one(index: int, conversation: Conversation) -> None:
            await asyncio.sleep(spread_seconds * index / max(count, 1))
            try:
                await conversation.run(limit)
            except Exception as exc:  # recorded: the caller checks every conversation
                conversation.errors.append(f"run: {exc!r}")

        work = [asyncio.create_task(one(i, c)) for i, c in enumerate(conversations)]
        if during is not None:
            work.append(asyncio.create_task(during(conversations)))
        await asyncio.gather(*work)
    return Outcome(conversations, time.monotonic() - started)


@dataclass
class Stored:
    """What the database holds for a run's conversations, from the page's source."""

    seqs: dict[str, set[int]]
    statuses: dict[str, str]

    def lost(self, outcome: Outcome) -> int:
        """Lines a page was told are stored (seq ≤ its highest_seq) that are not: the promise broken."""
        return sum(
            len(set(range(1, c.acknowledged + 1)) - self.seqs.get(c.session_id, set()))
            for c in outcome.conversations
        )

    def unacknowledged(self, outcome: Outcome) -> int:
        """Lines stored that the page was never told about (it would send them again: harmless)."""
        return sum(
            len(self.seqs.get(c.session_id, set()) - set(range(1, c.acknowledged + 1)))
            for c in outcome.conversations
        )


async def stored_lines(database_url: str, outcome: Outcome) -> Stored:
    ids = [c.session_id for c in outcome.conversations if c.session_id]
    db = Database(database_url)
    try:
        async with db.reading() as session:
            rows = await session.execute(
                select(TranscriptEntry.conversation_id, TranscriptEntry.seq).where(
                    TranscriptEntry.source == "page", TranscriptEntry.conversation_id.in_(ids)
                )
            )
            seqs: dict[str, set[int]] = {}
            for conversation_id, seq in rows:
                seqs.setdefault(conversation_id, set()).add(seq)
            statuses = dict(
                (row.id, str(row.status))
                for row in await session.execute(
                    select(ConversationRow.id, ConversationRow.status).where(ConversationRow.id.in_(ids))
                )
            )
    finally:
        await db.dispose()
    return Stored(seqs, statuses)
