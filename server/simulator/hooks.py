"""Test hooks under /_sim/: each puts a conversation in a state a visitor can see (docs/protocol.md).

Every hook answers JSON; a malformed body is a 400 naming the problem, an unknown session a 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from server.simulator.conversation import HIDE_EVENTS, SHOW_EVENTS, genui_sample
from server.simulator.service import Simulator
from server.simulator.session import SimSession

ADMISSION_MODES = ("open", "full", "tier-exceeded")
MAX_HEARD_CHARS = 2000
FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors *"
FRAME_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Simulator frame</title>"
    '<p style="font:16px sans-serif">A page the simulated avatar showed in a frame.</p>'
)

Hook = Callable[[SimSession, dict[str, Any]], Awaitable[dict[str, Any]]]


class BadRequest(Exception):
    """The hook's body is not what it takes; the message says what is wrong."""


def routes(sim: Simulator) -> list[Route]:
    def session_hook(hook: Hook) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = sim.sessions.get(request.path_params["session_id"])
            if session is None or session.ended:
                return JSONResponse({"error": "unknown or ended session"}, status_code=404)
            try:
                result = await hook(session, await _body(request))
            except BadRequest as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"ok": True, **result})

        return endpoint

    async def hear(session: SimSession, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_HEARD_CHARS:
            raise BadRequest(f"send {{text}}: a non-empty sentence of at most {MAX_HEARD_CHARS} characters")
        interim = body.get("interim", True)
        if not isinstance(interim, bool):
            raise BadRequest("interim must be true or false")
        session.spawn(sim.hear(session, text.strip(), interim))
        return {}

    async def time_warning(session: SimSession, body: dict[str, Any]) -> dict[str, Any]:
        remaining = body.get("remaining_seconds", 60)
        if not isinstance(remaining, int) or isinstance(remaining, bool) or not 0 < remaining <= 3600:
            raise BadRequest("remaining_seconds must be a whole number from 1 to 3600")
        await session.send("conversationTimeWarning", {"remainingTime": remaining})
        return {}

    async def end(session: SimSession, body: dict[str, Any]) -> dict[str, Any]:
        reason = body.get("reason", "ended")
        events = {"ended": "conversationEnded", "expired": "conversationTimeExpired"}
        if reason not in events:
            raise BadRequest('reason must be "ended" or "expired"')
        session.spawn(sim.end(session, events[reason]))
        return {}

    async def availability(session: SimSession, body: dict[str, Any]) -> dict[str, Any]:
        available = body.get("available")
        if not isinstance(available, bool):
            raise BadRequest("send {available: true|false}")
        session.available = available
        return {}

    async def genui(session: SimSession, body: dict[str, Any]) -> dict[str, Any]:
        show, hide, data = body.get("show"), body.get("hide"), body.get("data")
        if (show is None) == (hide is None):
            raise BadRequest("send either {show, data?} or {hide}")
        if data is not None and not isinstance(data, dict):
            raise BadRequest("data must be an object")
        if hide is not None:
            if hide not in HIDE_EVENTS:
                raise BadRequest(f"hide must be one of {', '.join(HIDE_EVENTS)}")
            await session.send(hide)
            return {"event": hide}
        payload: dict[str, Any] | None
        if show == "contactCollector":
            payload = data if data is not None else {"contact_type": "email"}
        elif show in SHOW_EVENTS:
            payload = data if data is not None else genui_sample(show, sim.config.public_url)
        else:
            raise BadRequest(f"show must be contactCollector or one of {', '.join(SHOW_EVENTS)}")
        await session.send(show, payload)
        return {"event": show, "data": payload}

    async def admission(request: Request) -> Response:
        try:
            body = await _body(request)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        mode, flow_id = body.get("mode"), body.get("flow_id", "*")
        if mode not in ADMISSION_MODES or not isinstance(flow_id, str) or not flow_id:
            return JSONResponse(
                {"error": f"send {{mode, flow_id?}} with mode one of {', '.join(ADMISSION_MODES)}"},
                status_code=400,
            )
        if mode == "open":
            sim.admission.pop(flow_id, None)
        else:
            sim.admission[flow_id] = mode
        return JSONResponse({"ok": True, "admission": sim.admission})

    async def media(request: Request) -> Response:
        try:
            body = await _body(request)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        video, flow_id = body.get("video"), body.get("flow_id", "*")
        fallback = body.get("fallback", True)
        if (
            not isinstance(video, bool)
            or not isinstance(fallback, bool)
            or not isinstance(flow_id, str)
            or not flow_id
        ):
            return JSONResponse(
                {"error": "send {video: true|false, fallback?: true|false, flow_id?}"}, status_code=400
            )
        for switched_off, on in ((sim.no_video, video), (sim.no_fallback, fallback)):
            if on:
                switched_off.discard(flow_id)
            else:
                switched_off.add(flow_id)
        return JSONResponse(
            {"ok": True, "no_video": sorted(sim.no_video), "no_fallback": sorted(sim.no_fallback)}
        )

    async def frame(_request: Request) -> Response:
        return HTMLResponse(FRAME_PAGE, headers={"content-security-policy": FRAME_CSP})

    hooks: dict[str, Hook] = {
        "hear": hear,
        "time-warning": time_warning,
        "end": end,
        "availability": availability,
        "genui": genui,
    }
    return [
        *(
            Route(f"/_sim/sessions/{{session_id}}/{name}", session_hook(hook), methods=["POST"])
            for name, hook in hooks.items()
        ),
        Route("/_sim/admission", admission, methods=["POST"]),
        Route("/_sim/media", media, methods=["POST"]),
        Route("/_sim/genui/frame", frame),
    ]


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
