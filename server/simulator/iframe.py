"""The Iframe SDK's upstream: the sdk-assets request and a meeting page that runs the same conversation,
talking to its parent page with the iframe postMessage protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.simulator.service import Simulator
from server.simulator.session import SimSession

STATIC = Path(__file__).parent / "static"
MEET_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'"
)
MAX_MESSAGE_CHARS = 256 * 1024
PROMPT_WAIT_SECONDS = 3.0  # how long a meeting waits for the parent's DPP before it greets without one
# What a test may make the meeting page tell its parent (the Iframe SDK's PERMISSIONS_DENIED and
# LOAD_AGENT_ERROR).
MEETING_EVENTS = ("permissions-denied", "load-agent-error")


def pronunciation_score(text: str) -> int:
    """A stable, plausible 0-100 score for a user's line (no speech analysis here)."""
    return 60 + sum(map(ord, text)) % 41


def routes(sim: Simulator) -> list[Any]:
    config = sim.config

    async def sdk_assets(request: Request) -> Response:
        client_id, flow_id = request.path_params["client_id"], request.path_params["flow_id"]
        headers = {"access-control-allow-origin": "*"}
        if not sim.known(client_id, flow_id):
            return JSONResponse({"error": "unknown client or flow"}, status_code=404, headers=headers)
        return JSONResponse(
            {
                # The shapes the Iframe SDK declares for its assets (sdk-iframe/kaltura-avatar-sdk.d.ts).
                "avatar": {"given_name": config.agent_name, "images": [], "videos": []},
                "language": {"languageCode": "en"},
                "design": {"logo": "", "theme": "dark", "color": "#2c3e8c"},
                "talk_url": f"{config.public_url}/meet/{client_id}/{flow_id}",
            },
            headers=headers,
        )

    async def meet_page(request: Request) -> Response:
        html = (STATIC / "meet.html").read_text().replace("{{agent}}", config.agent_name)
        return HTMLResponse(html, headers={"content-security-policy": MEET_CSP, "cache-control": "no-store"})

    async def conversation(websocket: WebSocket) -> None:
        await websocket.accept()
        client_id = websocket.query_params.get("client", "")
        flow_id = websocket.query_params.get("flow", "")

        async def send(event: str, data: Any) -> None:
            await websocket.send_json({"event": event, "data": data})

        session = sim.new_session("iframe", send, {"client": client_id, "flowId": flow_id})
        await session.send("session", {"id": session.id, "flow": flow_id})
        try:
            while True:
                raw = await websocket.receive_text()
                await on_message(session, raw[:MAX_MESSAGE_CHARS])
        except WebSocketDisconnect:
            pass
        finally:
            session.ended = True
            await session.close()

    async def on_message(session: SimSession, raw: str) -> None:
        try:
            message = json.loads(raw)
            event, data = str(message["event"]), message.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return  # garbage from the page is dropped
        session.log("in", event, data)
        if event == "join" and not session.ended:
            await session.send("showing-agent")
            # The parent injects its DPP 500 ms after `showing-agent` (the SDK guide); the meeting greets as
            # soon as it is in, or without one when a page injects nothing.
            sim.start_conversation(session, wait_for_prompt=PROMPT_WAIT_SECONDS)
        elif event == "prompt" and isinstance(data, dict):
            await sim.on_setDynamicPrompt(session, {"message": data.get("content")})
        elif (
            event == "text"
            and isinstance(data, dict)
            and isinstance(data.get("text"), str)
            and data["text"].strip()
        ):
            text = data["text"].strip()[:2000]
            await session.send("pronunciation-score", {"pronunciationScore": pronunciation_score(text)})
            session.spawn(sim.user_said(session, text))

    async def emit(request: Request) -> Response:
        """Test hook: the meeting page posts one of MEETING_EVENTS to its parent, as on a real failure."""
        session = sim.sessions.get(request.path_params["session_id"])
        if session is None or session.ended or session.transport != "iframe":
            return JSONResponse({"error": "unknown or ended meeting"}, status_code=404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        event = body.get("event") if isinstance(body, dict) else None
        if event not in MEETING_EVENTS:
            return JSONResponse(
                {"error": f"send {{event}} with event one of {', '.join(MEETING_EVENTS)}"}, status_code=400
            )
        await session.send("to-parent", {"event": event, "data": {"reason": "simulated"}})
        return JSONResponse({"ok": True})

    return [
        Route("/_sim/meetings/{session_id}/emit", emit, methods=["POST"]),
        Route("/clients/{client_id}/flow/{flow_id}/sdk-assets", sdk_assets),
        Route("/meet/{client_id}/{flow_id}", meet_page),
        WebSocketRoute("/meet-ws", conversation),
        Mount("/meet-static", app=StaticFiles(directory=STATIC)),
    ]
