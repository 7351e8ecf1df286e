"""The Socket.IO relay: one upstream connection per browser connection, events relayed both ways in order.

The page gives the SDK a signed session token as its clientId and the flow slug as its flowId; the real
Kaltura ids are put in only on the way upstream, so they never reach the browser.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import socketio
from sqlalchemy import select

from server.dependencies import Services
from server.models import Flow, Session
from server.relay.events import (
    CLIENT_EVENTS,
    RelayContext,
    rewrite_client_event,
    rewrite_upstream_event,
    upstream_query,
)
from server.relay.transcript_tap import TranscriptTap
from server.relay.whep import whep_proxy_path
from server.security.signing import PAGE_SESSION, TokenError
from server.upstreams import endpoints_for

log = logging.getLogger("avatar_bff.relay")
SOCKET_PATH = "socket.io"
UPSTREAM_GONE = "\0upstream-gone"  # cannot collide with a Socket.IO event name from the wire
END_EVENTS = {"conversationEnded": "conversation_ended", "conversationTimeExpired": "time_expired"}


class Refused(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A refused browser connection; the SDK shows the message as its connection error."""


@dataclass
class Bridge:
    """One browser socket and its upstream socket."""

    browser_sid: str
    session_id: str
    flow_slug: str
    upstream: socketio.AsyncClient
    context: RelayContext | None = None
    outbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = field(default_factory=asyncio.Queue)
    pump: asyncio.Task[None] | None = None
    closing: bool = False
    tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)

    def allow(self, rate: float) -> bool:
        """Token bucket: `rate` events per second with a burst of twice that."""
        now = time.monotonic()
        self.tokens = min(2 * rate, self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _args_to_data(args: tuple[Any, ...]) -> Any:
    # python-socketio sends a tuple as several arguments and anything else as one.
    return args if len(args) != 1 else args[0]


class RelayHub:
    """Owns the browser-facing Socket.IO server and every bridge."""

    def __init__(self, services: Services, allowed_origins: list[str] | None) -> None:
        self.services = services
        settings = services.settings
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=allowed_origins,  # None: same origin only; never [] (turns the check off)
            max_http_buffer_size=settings.relay_max_payload_bytes,
            async_handlers=False,  # keep each browser's events in order, one at a time
            logger=False,
            engineio_logger=False,
        )
        self.app = socketio.ASGIApp(self.sio, socketio_path=SOCKET_PATH)
        self.bridges: dict[str, Bridge] = {}
        self.per_flow: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # disallowed or rate-limited browser events, by reason
        self.tap = TranscriptTap(services.sessions)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_browser_event)

    @property
    def open_upstreams(self) -> int:
        return sum(1 for bridge in self.bridges.values() if bridge.upstream.connected)

    async def start(self) -> None:
        self.tap.start()

    async def stop(self) -> None:
        for sid in list(self.bridges):
            await self._close(sid)
        await self.tap.stop()

    async def _load(self, token: str, slug: str) -> tuple[Session, Flow]:
        try:
            claims = self.services.signer.verify(PAGE_SESSION, token)
        except TokenError as exc:
            raise Refused(f"This page's session is not valid ({exc}). Reload the page.") from None
        if claims.get("flow") != slug:
            raise Refused("This page's session belongs to another avatar. Reload the page.")
        async with self.services.sessions() as db:
            row = (
                await db.execute(
                    select(Session, Flow)
                    .join(Flow, Session.flow_id == Flow.id)
                    .where(Session.id == claims.get("sid"))
                )
            ).one_or_none()
        if row is None or not row[1].enabled:
            raise Refused("This avatar is no longer available.")
        if row[0].status == "ended":
            raise Refused("This conversation has ended. Reload the page to start a new one.")
        return row[0], row[1]

    async def _on_connect(self, sid: str, environ: dict[str, Any], _auth: Any = None) -> None:
        settings = self.services.settings
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        query = {k: v for k, v in query.items() if k not in ("EIO", "transport", "t", "sid")}
        session, flow = await self._load(query.get("client", ""), query.get("flowId", ""))
        if (
            len(self.bridges) >= settings.relay_max_total
            or self.per_flow[flow.slug] >= settings.relay_max_per_flow
        ):
            # The SDK understands this as "no agent available" (error 6001, or its queue when enabled).
            self.dropped["capacity"] += 1
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self._no_agent(sid)))
            return
        upstream = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
        bridge = Bridge(sid, session.id, flow.slug, upstream, tokens=2 * settings.relay_events_per_second)
        upstream.on("*", lambda event, *args: bridge.outbox.put_nowait((event, args)))
        # After everything upstream said before hanging up (the closing sentence, conversationEnded).
        upstream.on("disconnect", lambda *_: bridge.outbox.put_nowait((UPSTREAM_GONE, ())))
        endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, settings.simulator_url)
        placeholder = RelayContext(flow.client_id, flow.flow_id, "", lambda url: url)
        url = f"{endpoints.socket}/?{urlencode(upstream_query(query, placeholder))}"
        try:
            await asyncio.wait_for(
                upstream.connect(url, socketio_path=SOCKET_PATH, transports=["websocket"], wait_timeout=30),
                timeout=settings.relay_connect_timeout_seconds,
            )
        except (TimeoutError, socketio.exceptions.ConnectionError) as exc:
            await upstream.disconnect()
            reason = "did not answer in time" if isinstance(exc, TimeoutError) else "is unreachable"
            log.warning("relay: upstream for flow %s %s", flow.slug, reason)
            raise Refused(f"The avatar service {reason}. Please try again in a moment.") from None
        signer = self.services.signer
        bridge.context = RelayContext(
            flow.client_id,
            flow.flow_id,
            upstream.get_sid() or "",
            lambda u: whep_proxy_path(signer, u, session.id),
        )
        self.bridges[sid] = bridge
        self.per_flow[flow.slug] += 1
        bridge.pump = asyncio.create_task(self._pump(bridge))

    async def _no_agent(self, sid: str) -> None:
        await self.sio.emit("throwToNoAgent", {}, to=sid)

    async def _pump(self, bridge: Bridge) -> None:
        """Deliver upstream events to the browser in arrival order, once the browser's connect is done."""
        while not self.sio.manager.is_connected(bridge.browser_sid, "/"):
            if bridge.closing:
                return
            await asyncio.sleep(0.005)
        assert bridge.context is not None
        while True:
            event, args = await bridge.outbox.get()
            if event == UPSTREAM_GONE:
                await self._upstream_gone(bridge)
                return
            await self._tap_upstream(bridge, event, args)
            await self.sio.emit(
                event,
                _args_to_data(rewrite_upstream_event(event, args, bridge.context)),
                to=bridge.browser_sid,
            )

    async def _tap_upstream(self, bridge: Bridge, event: str, args: tuple[Any, ...]) -> None:
        payload = args[0] if args and isinstance(args[0], dict) else {}
        if event == "stvFinishedTalking" and isinstance(payload.get("agentContent"), str):
            await self.tap.line(bridge.session_id, "Avatar", payload["agentContent"])
        elif event == "agentTurnToTalk" and isinstance(payload.get("userTranscription"), str):
            await self.tap.line(bridge.session_id, "User", payload["userTranscription"])
        elif event in END_EVENTS:
            self.tap.ended(bridge.session_id, END_EVENTS[event])

    async def _on_browser_event(self, event: str, sid: str, *args: Any) -> None:
        bridge = self.bridges.get(sid)
        if bridge is None or bridge.context is None or bridge.closing:
            return
        if event not in CLIENT_EVENTS:
            self.dropped["disallowed"] += 1
            return
        if not bridge.allow(self.services.settings.relay_events_per_second):
            self.dropped["rate"] += 1
            return
        data = _args_to_data(rewrite_client_event(event, args, bridge.context))
        try:
            await bridge.upstream.emit(event, data)
        except socketio.exceptions.BadNamespaceError:
            await self._close(sid)

    async def _upstream_gone(self, bridge: Bridge) -> None:
        """Upstream hung up: the browser sees a server disconnect, so the SDK's own reconnect can run."""
        if not bridge.closing:
            log.info("relay: upstream closed the connection for flow %s", bridge.flow_slug)
            await self._close(bridge.browser_sid)
            await self.sio.disconnect(bridge.browser_sid)

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        await self._close(sid)

    async def _close(self, sid: str) -> None:
        bridge = self.bridges.pop(sid, None)
        if bridge is None or bridge.closing:
            return
        bridge.closing = True
        self.per_flow[bridge.flow_slug] -= 1
        if bridge.pump is not None and bridge.pump is not asyncio.current_task():
            bridge.pump.cancel()
        await bridge.upstream.disconnect()


class SocketIORoute:
    """ASGI middleware sending /socket.io/ (polling and WebSocket) to the relay, everything else on."""

    def __init__(self, app: Any, socketio_app: Any) -> None:
        self.app = app
        self.socketio_app = socketio_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(f"/{SOCKET_PATH}/"):
            await self.socketio_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
