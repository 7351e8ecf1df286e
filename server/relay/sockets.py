"""The Socket.IO relay: one upstream connection per browser connection, events relayed both ways in order.

The page gives the SDK a signed session token as its clientId and the flow slug as its flowId; the real
Kaltura ids are put in only on the way upstream, so they never reach the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import socketio

from server import request_context
from server.conversations import lifecycle as conversations
from server.conversations.lifecycle import STOP_SENTENCES
from server.conversations.page_token import read_page_token
from server.conversations.timeline import TimelineRecorder
from server.db import Database
from server.errors import AppError
from server.metrics import Metrics
from server.models import Flow, utcnow
from server.relay import control
from server.relay.budgets import VISITOR_EVENTS, BudgetGuard, BudgetRefused
from server.relay.engineio_server import LeanEngineIOServer
from server.relay.events import (
    BINARY_EVENT,
    CLIENT_EVENTS,
    EVENT,
    RELAYED_TYPES,
    TO_BROWSER,
    TO_UPSTREAM,
    Packet,
    RelayContext,
    client_packet_for_upstream,
    parse_packet,
    upstream_packet_for_browser,
    upstream_query,
)
from server.relay.upstream import UpstreamError, UpstreamSocket, socket_url
from server.relay.waiting import WaitingRoom
from server.relay.whep import whep_proxy_path
from server.security.limits import RequestLimitsMiddleware
from server.security.signing import Signer
from server.settings import Settings
from server.shared_state import InProcessState, SharedState
from server.transcripts.tap import TranscriptTap
from server.upstreams import endpoints_for

log = logging.getLogger("avatar_bff.relay")
SOCKET_PATH = "socket.io"
UPSTREAM_GONE = "\0upstream-gone"  # a marker among upstream packets; no Socket.IO packet starts with NUL
END_EVENTS = {"conversationEnded": "conversation_ended", "conversationTimeExpired": "time_expired"}
EARLY_PACKETS = 256  # upstream packets held while the browser's connect is still being acknowledged
DIALLING_PER_CONVERSATION = 2  # connects of one conversation dialling at once (the SDK's, socket.io's retry)
MAX_ATTACHMENTS = 4  # binary attachments one browser packet may declare (the SDK itself sends none)
GOODBYE_SECONDS = 0.5  # at shutdown, how long a browser may take to collect its goodbye and close
CAPACITY_GOODBYE_SECONDS = 1.0  # waiting room full: a refused socket closes this long after `throwToNoAgent`
WAITING_EVENTS = frozenset(("join", "setDynamicPrompt"))  # browser events whose relaying awaits something


class Refused(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A refused browser connection; the SDK shows the message as its connection error, the diagnostics
    timeline records the reason."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason

    @classmethod
    def because(cls, error: AppError) -> Refused:
        return cls(error.message, error.code)


@dataclass
class Bridge:
    """One browser socket and its upstream socket."""

    browser_sid: str
    conversation_id: str
    flow_slug: str
    upstream: UpstreamSocket
    eio_sid: str = ""
    context: RelayContext | None = None
    live: bool = False  # the browser's connect is acknowledged: upstream packets go straight through
    early: list[str | bytes] = field(default_factory=list)
    closing: bool = False
    skip_attachments: int = 0  # binary attachments of a dropped browser packet still to come
    expect_attachments: int = 0  # binary attachments of a relayed browser packet still to come
    dpp: str | None = None  # the server-rendered DPP, until it is injected upstream
    page_context: dict[str, int] | None = None  # the flow's limits on live context from the page; None: none
    page_context_sent: list[float] = field(default_factory=list)  # when, within the last minute
    rejoin: dict[str, Any] | None = None  # a queued SDK's `join`, sent up once upstream greets
    token: str = ""  # the page token it was opened with
    address: str = ""  # the client address its connect came from, whose slot it holds ("": none)
    socket_key: str = ""  # from page token + the SDK's stickyId (new each time the SDK connects)
    tokens: float = 0.0
    byte_tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)
    visitor_at: float = field(default_factory=time.monotonic)  # the visitor's last word, text or click
    counted: float = field(default_factory=time.monotonic)  # relayed time up to here is in the day's budget

    def allow(self, rate: float, byte_rate: float, frames: int, size: int) -> bool:
        """Token buckets: `rate` frames and `byte_rate` bytes per second, each with a burst of twice that."""
        self._refill(rate, byte_rate)
        if self.tokens >= frames and self.byte_tokens >= size:
            self.tokens -= frames
            self.byte_tokens -= size
            return True
        return False

    def charge(self, rate: float, byte_rate: float, size: int) -> None:
        """Bytes of an attachment already paid for as a frame: they may run the bucket into debt, which
        holds back what the browser sends next."""
        self._refill(rate, byte_rate)
        self.byte_tokens -= size

    def _refill(self, rate: float, byte_rate: float) -> None:
        now = time.monotonic()
        elapsed, self.refilled = now - self.refilled, now
        self.tokens = min(2 * rate, self.tokens + elapsed * rate)
        self.byte_tokens = min(2 * byte_rate, self.byte_tokens + elapsed * byte_rate)


class BrowserServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio server that hands a bridged browser's event and ack packets to the relay encoded."""

    def __init__(self, hub: RelayHub, **options: Any) -> None:
        super().__init__(**options)
        self._hub = hub
        self.eio.handle_now = self._handle_now  # called by the Engine.IO server for direct WebSockets

    def _engineio_server_class(self) -> type[LeanEngineIOServer]:
        return LeanEngineIOServer

    def _handle_now(self, eio_sid: str, data: str) -> bool:
        """A bridged browser's event or ack, relayed without a wait if it needs none (`from_browser_now`)."""
        bridge = self._hub.by_eio.get(eio_sid)
        if bridge is None or data[:1] not in RELAYED_TYPES:
            return False
        try:
            return self._hub.from_browser_now(bridge, data)
        except Exception:  # logged here, in the browser socket's read, with the conversation it belongs to
            token = request_context.conversation_id.set(bridge.conversation_id)
            try:
                log.exception("relay: a browser message could not be handled")
            finally:
                request_context.conversation_id.reset(token)
            return True  # it may be half done: not handled a second time

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        bridge = self._hub.by_eio.get(eio_sid)
        if bridge is not None and (isinstance(data, bytes) or data[:1] in RELAYED_TYPES):
            await self._hub.from_browser(bridge, data)
        else:
            await super()._handle_eio_message(eio_sid, data)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        # The connect acknowledgement is queued by now: what upstream said meanwhile may follow it.
        await self._hub.browser_connected(eio_sid)


class RelayHub:
    """Owns the browser-facing Socket.IO server and every bridge."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        signer: Signer,
        allowed_origins: list[str] | None,
        shared: SharedState | None = None,
    ) -> None:
        self.settings = settings
        self.shared: SharedState = shared or InProcessState()  # what instances of one deployment share
        self.db = db
        self.signer = signer
        self.sio = BrowserServer(
            self,
            client_manager=control.client_manager(
                settings.redis_url, settings.redis_key_prefix, self._on_control
            ),
            async_mode="asgi",
            cors_allowed_origins=allowed_origins,  # None: same origin only; never [] (turns the check off)
            max_http_buffer_size=settings.relay_max_payload_bytes,
            async_handlers=False,  # keep each browser's packets in order, one at a time
            logger=False,
            engineio_logger=False,
        )
        # python-engineio leaves a long-polling POST over its limit unanswered (and a graceful shutdown then
        # waits on it for good): such bodies are refused with a 413 before it sees them.
        self.app = RequestLimitsMiddleware(
            socketio.ASGIApp(self.sio, socketio_path=SOCKET_PATH),
            max_query_bytes=settings.max_query_bytes,
            max_body_bytes=settings.relay_max_payload_bytes,
        )
        self.bridges: dict[str, Bridge] = {}  # by browser socket id
        self.by_eio: dict[str, Bridge] = {}  # by browser Engine.IO id, for the packet path
        self.per_flow: Counter[str] = Counter()  # bridges and connects under way, by flow slug
        # One live bridge per conversation: a newer connect replaces the older bridge.
        self.by_conversation: dict[str, str] = {}  # conversation id → browser socket id of its bridge
        self.by_token: dict[str, str] = {}  # page token → browser socket id of its bridge
        self.dialling: Counter[str] = Counter()  # connects past the join, dialling upstream, by conversation
        self.newest: dict[str, int] = {}  # conversation id → number of its newest connect still dialling
        self.connects = 0  # connects numbered in the order they joined
        self.connecting = 0  # connects past the capacity check, not yet bridges: their slots are taken
        self.dropped: Counter[str] = Counter()  # browser packets not relayed, by reason
        self.tap = TranscriptTap(db, settings.transcript_max_lines, settings.transcript_max_bytes)
        self.waiting = WaitingRoom(lambda sid: asyncio.ensure_future(self.sio.disconnect(sid)))
        self.timeline = TimelineRecorder(db)
        self.metrics = Metrics()  # create_app puts in the one /metrics shows
        self.budgets = BudgetGuard(
            db,
            self.shared,
            self._token_ids,
            settings.budget_check_seconds,
            settings.relay_max_per_address,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        # Bridged sockets' events go upstream before python-socketio sees them: these are queued sockets'.
        self.sio.on("checkAvailability", self._on_poll)
        self.sio.on("join", self._on_rejoin)

    @property
    def open_upstreams(self) -> int:
        return sum(1 for bridge in self.bridges.values() if bridge.upstream.connected)

    async def start(self) -> None:
        self.tap.start()
        self.timeline.start()
        await self._start_budgets()

    async def drain(self) -> None:
        """This instance is stopping: every browser socket hears a server disconnect (on which the SDK
        reconnects, through the balancer to another instance, with the same page token), each upstream closes,
        and what the tap and the timeline hold is written."""
        # Detached first: the browsers' goodbyes go out at once, not each after its upstream's goodbye.
        bridges = [bridge for bridge in map(self._detach, list(self.bridges)) if bridge is not None]
        for bridge in bridges:
            self.timeline.note(bridge.conversation_id, "handed_off")
        sids = [*(bridge.browser_sid for bridge in bridges), *self.waiting.sockets]
        goodbyes = [asyncio.ensure_future(self._send_away(sid)) for sid in sids]
        goodbyes += [asyncio.ensure_future(bridge.upstream.disconnect()) for bridge in bridges]
        if goodbyes:  # a long-polling client that never polls again does not hold the writes below
            await asyncio.wait(goodbyes, timeout=self.settings.shutdown_grace_seconds / 2)
        await self.tap.flush()
        await self.timeline.flush()

    async def _send_away(self, sid: str) -> None:
        """A server disconnect, alone: socket.io-client then closes its Engine.IO session itself. An Engine.IO
        close in the same long-poll answer would reach it first and read as "transport close"."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        session = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        await self.sio.disconnect(sid)
        if session is None:
            return
        deadline = time.monotonic() + GOODBYE_SECONDS
        while not session.closed and time.monotonic() < deadline:  # noqa: ASYNC110 - engineio sets no event
            await asyncio.sleep(GOODBYE_SECONDS / 10)
        if not session.closed:  # the client did not close (gone, or not listening): close it from here
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sio.eio.disconnect(eio_sid), GOODBYE_SECONDS)
        # A long-poll the client left open as it closed would otherwise wait out its ping timeout (45 s),
        # holding the stop: python-engineio answers it (empty) once its queue yields None.
        session.queue.put_nowait(None)

    async def stop(self) -> None:
        await self._stop_budgets()
        self.waiting.clear()
        await asyncio.gather(*(self._close(sid) for sid in list(self.bridges)))
        await self.tap.stop()
        await self.timeline.stop()

    async def _join(self, token: str, slug: str) -> tuple[str, Flow, str | None]:
        """Start (or rejoin) the conversation the page token names: its id, flow and DPP (as the SDK would
        send it, a JSON string); refusals carry the reason."""
        try:
            page = await conversations.join(self.db, self.signer, token, slug)
        except AppError as exc:
            self.budgets.not_joined(token, lambda conversation_id: conversation_id in self.by_conversation)
            raise Refused.because(exc) from None
        assert page.conversation is not None
        self.budgets.joined(page.conversation.id, page.conversation.created_at)
        dpp = page.conversation.rendered_dpp
        # Compact, as the SDK's JSON.stringify would send it.
        message = None if dpp is None else json.dumps(dpp, ensure_ascii=False, separators=(",", ":"))
        return page.conversation.id, page.flow, message

    async def _on_connect(self, sid: str, environ: dict[str, Any], _auth: Any = None) -> None:
        # python-engineio keeps this environ as long as the socket lives and nothing reads it after connect:
        # its request body reader (an instance of a class defined per request, ~2.5 KB) and the request's
        # headers (~1 KB per idle socket, measured) go; refilled, the dict itself shrinks too.
        kept = {k: v for k, v in environ.items() if not k.startswith("HTTP_") and k != "wsgi.input"}
        environ.clear()
        environ.update(kept)
        settings = self.settings
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        query = {k: v for k, v in query.items() if k not in ("EIO", "transport", "t", "sid")}
        slug = query.get("flowId", "")
        if await self._socket_joined(_socket_key(query)):
            # socket.io's retry of a socket the SDK has left (S:3690-3710: the SDK reconnects with a new
            # stickyId, the old socket keeps retrying): bridged, it would push out the SDK's new socket.
            raise Refused("This connection was replaced by a newer one from the same page.", "abandoned")
        # An SDK reconnecting leaves its queued socket behind (S:3327-3333): the new one takes over.
        for stale in self.waiting.with_token(query.get("client", "")):
            await self.sio.disconnect(stale.sid)
        # The address's slot first (in shared state, held per conversation: a reconnect renews its own, on
        # any instance), then capacity: a caller turned away starts no conversation. The capacity slot is
        # taken with nothing awaited after the check, so parallel connects cannot all pass it. A reconnect
        # of a bridged page needs no room: its bridge's slot comes free as the new one takes over.
        address = _client_address(environ)
        held = await self._hold_address(address, query.get("client", ""), note=True)
        reconnect = query.get("client", "") in self.by_token
        if not self._has_room(slug) and not reconnect:
            if held is not None:  # queued sockets hold none: the address's slot is taken again at `join`
                self._address_free(address, held)
            # The SDK understands this as "no agent available": its queue polls this socket (or error 6001).
            self.dropped["capacity"] += 1
            self._note_refusal(query.get("client", ""), "capacity")
            if len(self.waiting) < settings.relay_max_total:
                self.waiting.add(sid, slug, query, address)
                goodbye = None
            else:  # too many waiting already: the SDK tries again later with a new socket
                goodbye = CAPACITY_GOODBYE_SECONDS
            asyncio.get_running_loop().call_later(
                0.05, lambda: asyncio.ensure_future(self._no_agent(sid, goodbye))
            )
            return
        self.connecting += 1
        self.per_flow[slug] += 1
        bridged = False
        try:
            bridged = await self._bridge(sid, query, slug, address=address)
        except Refused as exc:
            self._note_refusal(query.get("client", ""), exc.reason)
            raise
        finally:
            self.connecting -= 1
            if not bridged:
                _release(self.per_flow, slug)
                if held is not None:
                    self._address_free(address, held)

    async def _hold_address(self, address: str, token: str, *, note: bool = False) -> str | None:
        """The address's slot for this connect's conversation (its id; None: none held), or `Refused`."""
        try:
            return await self.budgets.hold_address(address, token)
        except BudgetRefused as exc:
            if note:
                self._note_refusal(token, exc.reason)
            raise Refused(exc.message, exc.reason) from None

    def _address_free(self, address: str, conversation_id: str) -> None:
        self.budgets.address_free(
            address,
            conversation_id,
            lambda c: c in self.by_conversation or c in self.dialling,  # bridged, or about to be, here
        )

    def _has_room(self, slug: str) -> bool:
        settings = self.settings
        return (
            len(self.bridges) + self.connecting < settings.relay_max_total
            and self.per_flow[slug] < settings.relay_max_per_flow
        )

    async def _on_poll(self, sid: str, *_args: Any) -> None:
        """A queued SDK's `checkAvailability`: a slot is held for it as soon as there is one."""
        entry = self.waiting.get(sid)
        if entry is None:
            return
        if not entry.admitted and self._has_room(entry.slug):
            self.connecting += 1
            self.per_flow[entry.slug] += 1
            self.waiting.admit(entry)
        else:
            self.waiting.heard(entry)
        await self.sio.emit("availabilityResult", {"available": entry.admitted}, to=sid, ignore_queue=True)

    async def _on_rejoin(self, sid: str, payload: Any = None, *_args: Any) -> None:
        """The SDK's `join` after `available: true`: the socket is bridged now, with the slot held for it."""
        entry = self.waiting.get(sid)
        if entry is None or not entry.admitted:
            return
        self.waiting.remove(sid)
        await self._joined_socket(_socket_key(entry.query))
        bridged = False
        held = None
        try:
            held = await self._hold_address(entry.address, entry.token)
            rejoin = payload if isinstance(payload, dict) else {}
            bridged = await self._bridge(sid, entry.query, entry.slug, rejoin, entry.address)
        except Refused as exc:
            # The SDK hears of it as a lost connection and connects again, which is refused with the reason.
            log.info("relay: a queued socket of flow %s could not join: %s", entry.slug, exc)
            await self.sio.disconnect(sid)
        finally:
            self.connecting -= 1
            if not bridged:
                _release(self.per_flow, entry.slug)
                if held is not None:
                    self._address_free(entry.address, held)

    async def _bridge(
        self,
        sid: str,
        query: dict[str, str],
        slug: str,
        rejoin: dict[str, Any] | None = None,
        address: str = "",
    ) -> bool:
        """Join the conversation and open its upstream; refusals raise. The flow's slot is already taken."""
        await self._admit(query.get("client", ""), slug)
        conversation_id, flow, dpp = await self._join(query.get("client", ""), slug)
        request_context.conversation_id.set(conversation_id)  # for log lines, the upstream leg's too
        if self.dialling[conversation_id] >= DIALLING_PER_CONVERSATION:
            raise Refused(
                "This conversation is already connecting in another window. Close it, or reload the page.",
                "already_open",
            )
        self.timeline.note(conversation_id, "relay_connect")
        self.dialling[conversation_id] += 1
        self.connects += 1
        number = self.newest[conversation_id] = self.connects
        try:
            started = time.monotonic()
            upstream = await self._connect_upstream(sid, query, flow)
            latency_ms = round((time.monotonic() - started) * 1000)
            self.metrics.upstream_connected(latency_ms / 1000)
            self.timeline.note(conversation_id, "upstream_connect", latency_ms=latency_ms)
            if self.sio.manager.eio_sid_from_sid(sid, "/") is None:  # the browser left meanwhile
                await upstream.disconnect()
                raise Refused(
                    "The connection closed while the avatar service was being reached.", "browser_left"
                )
            if self.newest[conversation_id] != number:  # a newer connect of this conversation is on its way
                await upstream.disconnect()
                raise Refused("A newer connection to this conversation took its place.", "replaced")
            replaced = self._open(sid, conversation_id, flow, dpp, slug, upstream, query, rejoin, address)
        finally:
            _release(self.dialling, conversation_id)
            if conversation_id not in self.dialling:
                self.newest.pop(conversation_id, None)
        if replaced is not None:
            # Its browser socket goes first: that SDK (or its orphaned socket) hears it before this socket's
            # connect is acknowledged, while the SDK is still `connecting` and so does not reconnect again.
            await self.sio.disconnect(replaced.browser_sid)
            await replaced.upstream.disconnect()
        return True

    async def _connect_upstream(self, sid: str, query: dict[str, str], flow: Flow) -> UpstreamSocket:
        """An upstream connected for browser socket `sid`; what it says goes to that socket's bridge."""
        settings = self.settings
        upstream: UpstreamSocket

        async def from_upstream(data: str | bytes) -> None:
            bridge = self.bridges.get(sid)
            if bridge is not None and bridge.upstream is upstream:
                await self._from_upstream(bridge, data)

        def from_upstream_now(data: str) -> bool:
            bridge = self.bridges.get(sid)
            return bridge is not None and bridge.upstream is upstream and self._to_browser_now(bridge, data)

        async def upstream_gone() -> None:
            # After everything upstream said before hanging up (the closing sentence, conversationEnded).
            await from_upstream(UPSTREAM_GONE)

        upstream = UpstreamSocket(from_upstream, upstream_gone, from_upstream_now)
        endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, settings.simulator_url)
        placeholder = RelayContext(flow.client_id, flow.flow_id, "", lambda url: url)
        try:
            async with asyncio.timeout(settings.relay_connect_timeout_seconds):
                await upstream.connect(
                    socket_url(endpoints.socket, SOCKET_PATH, upstream_query(query, placeholder))
                )
        except (TimeoutError, UpstreamError) as exc:
            await upstream.disconnect()
            reason = "did not answer in time" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("relay: upstream for flow %s %s", flow.slug, reason)
            code = "upstream_timeout" if isinstance(exc, TimeoutError) else "upstream_failed"
            self.metrics.upstream_failed(code)
            raise Refused(f"The avatar service {reason}. Please try again in a moment.", code) from None
        except BaseException:  # cancelled (the server is stopping): nothing may stay open
            await upstream.disconnect()
            raise
        return upstream

    def _open(
        self,
        sid: str,
        conversation_id: str,
        flow: Flow,
        dpp: str | None,
        slug: str,
        upstream: UpstreamSocket,
        query: dict[str, str],
        rejoin: dict[str, Any] | None = None,
        address: str = "",
    ) -> Bridge | None:
        """Register the bridge, in place of the conversation's older one (returned, detached, to be closed).

        No await here: no packet from upstream is delivered before the bridge exists, and none of the older
        bridge's after it does, so the transcript never hears two upstream sessions."""
        older = self.by_conversation.get(conversation_id)
        replaced = self._detach(older) if older is not None else None
        token = query.get("client", "")
        bridge = Bridge(
            sid,
            conversation_id,
            slug,
            upstream,
            tokens=2 * self.settings.relay_events_per_second,
            byte_tokens=2 * self.settings.relay_max_payload_bytes,
            dpp=dpp,
            page_context=flow.page_context,
            rejoin=rejoin,
            live=rejoin is not None,  # a queued socket's connect was acknowledged long ago
            token=token,
            socket_key=_socket_key(query),
            address=address,
        )
        signer = self.signer
        bridge.context = RelayContext(
            flow.client_id,
            flow.flow_id,
            upstream.sid,
            lambda u: whep_proxy_path(signer, u, bridge.conversation_id),
        )
        bridge.eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        self.bridges[sid] = bridge
        self.by_eio[bridge.eio_sid] = bridge
        self.by_conversation[conversation_id] = sid
        if token:
            self.by_token[token] = sid
        return replaced

    # Sockets (page token + stickyId) whose SDK sent `join` are remembered in the shared state, so a retry
    # is refused by whichever instance it reaches: after a drop the SDK leaves such a socket for a new one.
    async def _joined_socket(self, key: str) -> None:
        if key:
            await self.shared.add(key, 1, ttl_seconds=self.settings.session_token_ttl_seconds)

    async def _socket_joined(self, key: str) -> bool:
        if not key:
            return False
        return await self.shared.total(key) > 0  # read only: a flood of connects leaves no keys behind

    def _note_refusal(self, token: str, reason: str) -> None:
        """On its conversation's timeline, or its flow's when none started (a forged token: nowhere)."""
        self.metrics.refused(reason)
        try:
            page = read_page_token(self.signer, token)
        except AppError:
            return
        self.timeline.refused(page.conversation_id, page.flow_slug, reason)

    async def _no_agent(self, sid: str, goodbye: float | None) -> None:
        """The SDK's capacity path: `throwToNoAgent`; with `goodbye`, the socket is closed that much later."""
        await self.sio.emit("throwToNoAgent", {}, to=sid, ignore_queue=True)
        if goodbye is not None:
            await asyncio.sleep(goodbye)
            await self.sio.disconnect(sid)

    async def browser_connected(self, eio_sid: str) -> None:
        """Deliver what upstream said before the browser's connect was acknowledged, then go live."""
        bridge = self.by_eio.get(eio_sid)
        if bridge is None:
            return
        while bridge.early:  # no await between the last pop and going live: order holds
            await self._to_browser(bridge, bridge.early.pop(0))
            if bridge.closing:
                return
        bridge.live = True

    async def _from_upstream(self, bridge: Bridge, data: str | bytes) -> None:
        if bridge.closing:
            return
        if not bridge.live:
            if bridge.early and bridge.early[-1] is UPSTREAM_GONE:
                return
            if len(bridge.early) >= EARLY_PACKETS:
                # Treated as a hang-up, delivered in order: the browser is disconnected once it has joined.
                log.warning("relay: upstream of flow %s sent too much too early", bridge.flow_slug)
                data = UPSTREAM_GONE
            bridge.early.append(data)
            return
        await self._to_browser(bridge, data)

    async def _to_browser(self, bridge: Bridge, data: str | bytes) -> None:
        if data is UPSTREAM_GONE:
            await self._upstream_gone(bridge)
            return
        if isinstance(data, str):
            packet = parse_packet(data)
            self.metrics.relayed(TO_BROWSER, None if packet is None else packet.event)
            if packet is not None and bridge.rejoin is not None and packet.event == "onServerConnected":
                await self._rejoined(bridge)
                return
            if packet is not None and bridge.context is not None:
                data, event = upstream_packet_for_browser(packet, data, bridge.context)
                if event is not None:
                    self._tap_upstream(bridge, event)
        await self.sio.eio.send(bridge.eio_sid, data)

    def _to_browser_now(self, bridge: Bridge, data: str) -> bool:
        """`_from_upstream` for a text packet that can be written to the browser's WebSocket at once, done in
        the upstream socket's read. False: nothing was done or changed, `_from_upstream` takes it."""
        if (
            bridge.closing
            or not bridge.live
            or bridge.rejoin is not None
            or not self.sio.eio.can_send_now(bridge.eio_sid)
        ):
            return False
        packet = parse_packet(data)
        self.metrics.relayed(TO_BROWSER, None if packet is None else packet.event)
        event = None
        if packet is not None and bridge.context is not None:
            data, event = upstream_packet_for_browser(packet, data, bridge.context)
        self.sio.eio.send_now(bridge.eio_sid, data)  # nothing since `can_send_now` could have changed it
        if event is not None:
            self._tap_upstream(bridge, event)
        return True

    async def _rejoined(self, bridge: Bridge) -> None:
        """Upstream greets a socket that left the queue: the SDK already sent its `join` and will not answer
        a greeting again, so the relay sends what the SDK sends on one (S:3750-3783), from that `join`."""
        join, bridge.rejoin = bridge.rejoin or {}, None
        valid = {
            "client": join.get("client", ""),
            "debugMode": True,
            "room": join.get("room", ""),
            "userAgent": join.get("userAgent", ""),
            "referrer": "",
            "clickId": join.get("room", ""),
            "hashClickId": None,
            "level": "published",
            "flowId": bridge.flow_slug,
        }
        for name, payload in (("isValidSession", valid), ("join", join)):
            await self.from_browser(bridge, EVENT + json.dumps([name, payload], separators=(",", ":")))

    def _tap_upstream(self, bridge: Bridge, event: list[Any]) -> None:
        name, payload = event[0], event[1] if len(event) > 1 and isinstance(event[1], dict) else {}
        if name == "stvFinishedTalking" and isinstance(payload.get("agentContent"), str):
            self.tap.line(bridge.conversation_id, "Avatar", payload["agentContent"])
        elif name == "agentTurnToTalk" and isinstance(payload.get("userTranscription"), str):
            bridge.visitor_at = time.monotonic()  # the visitor spoke
            self.tap.line(bridge.conversation_id, "User", payload["userTranscription"])
        elif name in END_EVENTS:
            self.tap.ended(bridge.conversation_id, END_EVENTS[name])
            self.timeline.note(bridge.conversation_id, "end", reason=END_EVENTS[name], by="avatar service")

    async def from_browser(self, bridge: Bridge, data: str | bytes) -> None:
        """An event or ack packet (or a binary attachment) from a bridged browser."""
        request_context.conversation_id.set(bridge.conversation_id)  # for log lines
        if bridge.closing or bridge.context is None:
            return
        rate, byte_rate = self.settings.relay_events_per_second, self.settings.relay_max_payload_bytes
        if isinstance(data, bytes):  # an attachment of the packet before it
            if bridge.skip_attachments:
                bridge.skip_attachments -= 1
            elif bridge.expect_attachments:
                bridge.expect_attachments -= 1
                bridge.charge(rate, byte_rate, len(data))
                await self._to_upstream(bridge, data)
            else:  # no packet is waiting for it
                self.dropped["stray"] += 1
            return
        bridge.skip_attachments = 0  # a text frame: whatever a dropped packet declared is not coming
        packet = parse_packet(data)
        if packet is None or packet.namespace != "/" or bridge.expect_attachments:
            # Text while a relayed packet's attachments are due is not Socket.IO: upstream would misread it.
            self.dropped["malformed"] += 1
            return
        reason = self._screen(bridge, packet, len(data))
        if reason is None and packet.event == "setDynamicPrompt":
            reason = await self._page_context(bridge, packet)
        sent = self._pass_up(bridge, packet, data, reason)
        if sent is None:
            return
        if packet.event == "join":
            await self._joined_socket(bridge.socket_key)
        elif packet.event == "approvedPermissions" and bridge.dpp is not None:
            # The SDK sends this just before its `ready`, when a page would inject the DPP; the service
            # starts talking on it, so the prompt goes first.
            injected = json.dumps(["setDynamicPrompt", {"message": bridge.dpp}], separators=(",", ":"))
            bridge.dpp = None
            await self._to_upstream(bridge, EVENT + injected)
        self.metrics.relayed(TO_UPSTREAM, packet.event)
        await self._to_upstream(bridge, sent)

    def from_browser_now(self, bridge: Bridge, data: str) -> bool:
        """`from_browser` for a text packet whose handling holds no wait, done at once, in the caller's turn
        of the event loop (the browser socket's read) instead of a task's. False: nothing was done or changed,
        `from_browser` takes the packet."""
        packet = parse_packet(data)
        if (
            packet is None
            or bridge.closing
            or bridge.context is None
            or packet.event in WAITING_EVENTS
            or (packet.event == "approvedPermissions" and bridge.dpp is not None)
            or packet.namespace != "/"
            or bridge.expect_attachments
            or packet.attachments
            or not bridge.upstream.ready()
        ):
            return False
        bridge.skip_attachments = 0
        sent = self._pass_up(bridge, packet, data, self._screen(bridge, packet, len(data)))
        if sent is not None:
            self.metrics.relayed(TO_UPSTREAM, packet.event)
            bridge.upstream.send_nowait(sent)
        return True

    def _screen(self, bridge: Bridge, packet: Packet, size: int) -> str | None:
        """Why a well-formed packet from the browser is dropped (taking its share of the rate if not), or
        None; a page's `setDynamicPrompt` is yet to be checked."""
        rate, byte_rate = self.settings.relay_events_per_second, self.settings.relay_max_payload_bytes
        if packet.attachments > MAX_ATTACHMENTS:
            return "attachments"
        if not bridge.allow(rate, byte_rate, 1 + packet.attachments, size):
            return "rate"
        if packet.kind in (EVENT, BINARY_EVENT) and packet.event not in CLIENT_EVENTS:
            return "disallowed"
        return None

    def _pass_up(self, bridge: Bridge, packet: Packet, data: str, reason: str | None) -> str | None:
        """The packet to send upstream, rewritten; None: dropped (counted, its attachments skipped)."""
        if (
            reason is None
        ):  # an allowed event, or an ack: credentials in either are the flow's, never the page's
            assert bridge.context is not None
            rewritten = client_packet_for_upstream(packet, data, bridge.context)
            reason, data = ("malformed", data) if rewritten is None else (None, rewritten)
        if reason is not None:
            self.dropped[reason] += 1
            bridge.skip_attachments = packet.attachments
            return None
        bridge.expect_attachments = packet.attachments
        if packet.event in VISITOR_EVENTS:
            bridge.visitor_at = time.monotonic()
        return data

    async def _page_context(self, bridge: Bridge, packet: Packet) -> str | None:
        """Why a page's own `setDynamicPrompt` is dropped, or None once it is recorded and may go upstream.

        Only flows with `page_context` take live context from the page, within its size and rate.
        """
        limits = bridge.page_context
        if limits is None:
            return "page_context"
        args = packet.args() if packet.kind == EVENT else None
        payload = args[1] if args is not None and len(args) == 2 else None
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str):
            return "malformed"
        now = time.monotonic()
        bridge.page_context_sent = [t for t in bridge.page_context_sent if now - t < 60]
        if (
            len(message.encode()) > limits["max_bytes"]
            or len(bridge.page_context_sent) >= limits["per_minute"]
        ):
            return "page_context"
        bridge.page_context_sent.append(now)
        await conversations.record_page_context(self.db, bridge.conversation_id, message, utcnow())
        return None

    async def _to_upstream(self, bridge: Bridge, data: str | bytes) -> None:
        try:
            await bridge.upstream.send(data)
        except (ConnectionError, OSError):  # upstream went away before its `gone` was delivered
            await self._upstream_gone(bridge)

    async def _upstream_gone(self, bridge: Bridge) -> None:
        """Upstream hung up: the browser sees a server disconnect, so the SDK's own reconnect can run."""
        if not bridge.closing:
            log.info("relay: upstream closed the connection for flow %s", bridge.flow_slug)
            await self._close(bridge.browser_sid)
            await self.sio.disconnect(bridge.browser_sid)

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        entry = self.waiting.remove(sid)
        if entry is not None and entry.admitted:  # the slot held for it is free again
            self.connecting -= 1
            _release(self.per_flow, entry.slug)
        await self._close(sid)

    async def _close(self, sid: str) -> None:
        bridge = self._detach(sid)
        if bridge is not None:
            await bridge.upstream.disconnect()

    def _detach(self, sid: str) -> Bridge | None:
        """Stop relaying for the bridge of `sid` and give back what it holds; None if it is gone already."""
        bridge = self.bridges.pop(sid, None)
        if bridge is None or bridge.closing:
            return None
        bridge.closing = True
        self.by_eio.pop(bridge.eio_sid, None)
        if self.by_conversation.get(bridge.conversation_id) == sid:
            del self.by_conversation[bridge.conversation_id]
        if self.by_token.get(bridge.token) == sid:
            del self.by_token[bridge.token]
        _release(self.per_flow, bridge.flow_slug)
        bridge.early.clear()
        self.budgets.closed(bridge, lambda conversation_id: conversation_id in self.by_conversation)
        return bridge

    # Budgets, kill switches and ending conversations from any instance.

    def _token_ids(self, token: str) -> tuple[str, str]:
        page = read_page_token(self.signer, token)
        return page.conversation_id, page.flow_slug

    async def _admit(self, token: str, slug: str) -> None:
        try:
            await self.budgets.admit(token, slug)
        except BudgetRefused as exc:
            raise Refused(exc.message, exc.reason) from None

    async def _start_budgets(self) -> None:
        # Listen for other instances' messages from the start (python-socketio would wait for a browser).
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        await control.check_redis(self.sio.manager)
        self.budgets.start(lambda: list(self.bridges.values()), self.stop_bridges)

    async def _stop_budgets(self) -> None:
        await self.budgets.stop()
        await control.close(self.sio.manager)

    async def end_conversations(
        self,
        reason: str,
        *,
        conversation_id: str | None = None,
        flow_slug: str | None = None,
        every_flow: bool = False,
    ) -> None:
        """End, on whichever instance bridges them, one conversation, a flow's, or every flow's.

        `reason` is one of `lifecycle.STOP_SENTENCES`: the conversation is recorded ended with it, and the
        visitor reads its sentence when the SDK's reconnect is refused."""
        if reason not in STOP_SENTENCES:
            raise ValueError(f"unknown stop reason {reason!r}")
        if conversation_id is None and flow_slug is None and not every_flow:
            raise ValueError("name a conversation, a flow, or every flow")
        payload = {"end": reason, "conversation": conversation_id, "flow": flow_slug, "all": every_flow}
        await control.broadcast(self.sio.manager, self._on_control, payload)

    async def _on_control(self, payload: dict[str, Any]) -> None:
        """Another instance's (or this one's) control message: end the matching bridges held here."""
        reason = payload.get("end")
        if reason not in STOP_SENTENCES:
            return
        if reason == "kill_switch":  # a switch changed: this instance refuses new connects from now on too
            await self.budgets.refresh()
        conversation, flow, every = payload.get("conversation"), payload.get("flow"), payload.get("all")
        matching = [
            bridge
            for bridge in list(self.bridges.values())
            if every is True or bridge.conversation_id == conversation or bridge.flow_slug == flow
        ]
        if matching:
            await self.stop_bridges(matching, str(reason))

    async def stop_bridges(self, bridges: Iterable[Bridge], reason: str) -> None:
        """End these bridges' conversations for `reason`: what was said is stored before the end, the end is
        durable before the browser hears of it, upstream closes, and the browser is disconnected (the SDK's
        reconnect is then refused with the reason's sentence, which the page shows)."""
        stopped = [bridge for bridge in bridges if self._detach(bridge.browser_sid) is not None]
        if not stopped:
            return
        for bridge in stopped:
            self.tap.ended(bridge.conversation_id, reason)
            self.timeline.note(bridge.conversation_id, "end", reason=reason, by="relay")
        log.info("relay: ending %d conversation(s): %s", len(stopped), reason)
        await self.tap.flush()
        await asyncio.gather(
            *(bridge.upstream.disconnect() for bridge in stopped),
            *(self.sio.disconnect(bridge.browser_sid) for bridge in stopped),
        )


def _client_address(environ: dict[str, Any]) -> str:
    """The browser's address, as uvicorn made it (the balancer's X-Forwarded-For, when it is trusted);
    python-engineio's own REMOTE_ADDR is always 127.0.0.1."""
    client = environ.get("asgi.scope", {}).get("client")
    return str(client[0]) if client else ""


def _socket_key(query: dict[str, str]) -> str:
    """The shared-state key of the SDK socket a connect comes from: a digest of its page token and stickyId
    ("" for a client without a stickyId), short however long the token."""
    sticky = query.get("stickyId", "")
    if not sticky:
        return ""
    digest = hashlib.blake2b(f"{query.get('client', '')}\n{sticky}".encode(), digest_size=16).hexdigest()
    return f"joined-socket:{digest}"


def _release(counter: Counter[str], key: str) -> None:
    """One less for `key`; keys at zero go, so browser-chosen slugs leave nothing behind."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
