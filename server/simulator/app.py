"""The simulator's ASGI app: Socket.IO conversation service, WHEP, Iframe SDK upstream, introspection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from server.simulator import hooks, iframe
from server.simulator.config import SimulatorConfig
from server.simulator.media import AvatarVideo, AvatarVoice
from server.simulator.service import Simulator

CORS = {"access-control-allow-origin": "*", "access-control-expose-headers": "Location"}
MAX_SDP_BYTES = 64 * 1024


def create_app(config: SimulatorConfig) -> Any:
    """The whole simulator as one ASGI app (Socket.IO at /socket.io, everything else on Starlette)."""
    sim = Simulator(config)
    resources: dict[str, RTCPeerConnection] = {}

    async def whep_preflight(_request: Request) -> Response:
        return Response(
            status_code=204,
            headers={
                **CORS,
                "access-control-allow-methods": "POST, DELETE, OPTIONS",
                "access-control-allow-headers": "Content-Type",
            },
        )

    async def whep_offer(request: Request) -> Response:
        session = sim.sessions.get(request.query_params.get("stream", ""))
        if session is None or session.ended:
            return PlainTextResponse("unknown stream", status_code=404, headers=CORS)
        if not sim.video_for(session):  # a test asked for a WHEP failure: the SDK falls back to audio
            session.log("in", "whep-offer", {"refused": True})
            return PlainTextResponse("video unavailable", status_code=503, headers=CORS)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            return PlainTextResponse("expected application/sdp", status_code=415, headers=CORS)
        offer = (await request.body())[:MAX_SDP_BYTES].decode(errors="replace")
        peer = RTCPeerConnection()
        session.peers.append(peer)
        peer.addTrack(AvatarVoice(session.voice))
        peer.addTrack(AvatarVideo(session.voice, f"{config.agent_name} · {session.flow_id}"))
        try:
            await peer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await peer.setLocalDescription(await peer.createAnswer())
        except (ValueError, RuntimeError) as exc:
            await peer.close()
            return PlainTextResponse(f"bad offer: {exc}", status_code=400, headers=CORS)
        resource = uuid.uuid4().hex
        resources[resource] = peer
        session.log("in", "whep-offer", {"bytes": len(offer)})
        return Response(
            peer.localDescription.sdp,
            status_code=201,
            media_type="application/sdp",
            headers={**CORS, "location": f"/rtc/v1/whep/resource/{resource}"},
        )

    async def whep_delete(request: Request) -> Response:
        peer = resources.pop(request.path_params["resource"], None)
        if peer is None:
            return PlainTextResponse("unknown resource", status_code=404, headers=CORS)
        await peer.close()
        return Response(status_code=200, headers=CORS)

    async def list_sessions(_request: Request) -> Response:
        return JSONResponse([session.describe() for session in sim.sessions.values()])

    async def say(request: Request) -> Response:
        session = sim.sessions.get(request.path_params["session_id"])
        if session is None:
            return JSONResponse({"error": "unknown session"}, status_code=404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "send JSON: {text} or {event, data}"}, status_code=400)
        if isinstance(body, dict) and isinstance(body.get("text"), str):
            session.spawn(sim.speak(session, body["text"]))
        elif isinstance(body, dict) and isinstance(body.get("event"), str) and body.get("ack") is True:
            # Emit asking for an acknowledgement and answer with what the client acknowledged (tests acks).
            if session.socket_sid is None:
                return JSONResponse({"error": "acks need a Socket.IO session"}, status_code=400)
            answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def acknowledged(*args: Any) -> None:
                if not answered.done():
                    answered.set_result(list(args))

            session.log("out", body["event"], body.get("data"))
            await sim.sio.emit(
                body["event"], body.get("data", {}), to=session.socket_sid, callback=acknowledged
            )
            try:
                return JSONResponse({"ok": True, "ack": await asyncio.wait_for(answered, 5)})
            except TimeoutError:
                return JSONResponse({"error": "no acknowledgement within 5 s"}, status_code=504)
        elif isinstance(body, dict) and isinstance(body.get("event"), str):
            await session.send(body["event"], body.get("data"))
        else:
            return JSONResponse({"error": "send JSON: {text} or {event, data}"}, status_code=400)
        return JSONResponse({"ok": True})

    async def drop(request: Request) -> Response:
        """Hang up on a session without ending the conversation, as a failing service would."""
        session = sim.sessions.get(request.path_params["session_id"])
        if session is None or session.socket_sid is None:
            return JSONResponse({"error": "unknown session"}, status_code=404)
        session.log("out", "drop", {})
        await sim.sio.disconnect(session.socket_sid)
        return JSONResponse({"ok": True})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": len(sim.sessions)})

    routes = [
        Route("/rtc/v1/whep/", whep_offer, methods=["POST"]),
        Route("/rtc/v1/whep/", whep_preflight, methods=["OPTIONS"]),
        Route("/rtc/v1/whep/resource/{resource}", whep_delete, methods=["DELETE"]),
        Route("/rtc/v1/whep/resource/{resource}", whep_preflight, methods=["OPTIONS"]),
        Route("/_sim/sessions", list_sessions),
        Route("/_sim/sessions/{session_id}/say", say, methods=["POST"]),
        Route("/_sim/sessions/{session_id}/drop", drop, methods=["POST"]),
        Route("/_sim/health", health),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # What is loaded by now (aiortc, PyAV, numpy, the drawn face) lives as long as the process: without
        # this, each full collection walked it all and stalled every socket for ~100 ms under load.
        gc.freeze()
        yield

    web = Starlette(routes=[*routes, *hooks.routes(sim), *iframe.routes(sim)], lifespan=lifespan)
    web.state.simulator = sim
    return socketio.ASGIApp(sim.sio, other_asgi_app=web, socketio_path="socket.io")
