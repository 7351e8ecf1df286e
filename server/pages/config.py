"""Build what a hosted page needs: the JSON config its script reads and the CSP it runs under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.models import Flow
from server.sdk import SOCKET_STYLE_HASHES, ScriptSource
from server.security.csp import PagePolicy
from server.upstreams import Endpoints, origin_of

# GenUI libraries the Socket SDK lazy-loads; we serve them from our origin (installed from npm at setup).
GENUI_LIBRARIES = {
    "chartjs": "/static/vendor/chart.js/chart.umd.min.js",
    "mermaid": "/static/vendor/mermaid/mermaid.min.js",
    "katex": "/static/vendor/katex/katex.min.js",
    "katex-css": "/static/vendor/katex/katex.min.css",
    "codemirror": "/static/vendor/codemirror/codemirror.js",
    "codemirror-css": "/static/vendor/codemirror/codemirror.css",
}
SOCKET_IO_CLIENT = "/static/vendor/socket.io/socket.io.min.js"


@dataclass(frozen=True)
class PageView:
    template: str
    config: dict[str, Any]
    policy: PagePolicy


def _socket_origins(endpoints: Endpoints) -> tuple[str, ...]:
    # Until the relay lands the browser talks to the upstream directly: Socket.IO (http + ws) and WHEP.
    origins = []
    for url in (endpoints.socket, endpoints.whep):
        origin = origin_of(url)
        origins += [origin, origin.replace("http", "ws", 1)]
    return tuple(origins)


def build_page(
    flow: Flow,
    endpoints: Endpoints,
    sdk: ScriptSource,
    dpp: dict[str, Any] | None,
    session_id: str,
    session_token: str,
) -> PageView:
    """Return template, config and policy for a flow's hosted page (pure: no I/O)."""
    simulator = flow.upstream == "simulator"
    frame_ancestors = tuple(flow.allowed_origins) or ("'self'",)
    common: dict[str, Any] = {
        "mode": flow.sdk_mode,
        "flow": {"slug": flow.slug, "name": flow.display_name},
        "simulator": simulator,
        "dpp": dpp,
        "commands": flow.spoken_commands,
        "session": {"id": session_id, "token": session_token},
    }
    scripts = (sdk.src,) if sdk.from_cdn else ()
    if flow.sdk_mode == "iframe":
        meet = origin_of(endpoints.meet)
        config = {
            **common,
            "sdk": {
                "clientId": flow.client_id,
                "flowId": flow.flow_id,
                "config": {"apiBaseUrl": endpoints.api, "meetBaseUrl": meet},
            },
        }
        policy = PagePolicy(
            script_urls=scripts,
            connect_origins=(origin_of(endpoints.api),),
            frame_origins=(meet,),
            frame_ancestors=frame_ancestors,
            permission_delegates=(meet,),
        )
        return PageView("pages/iframe.html", config, policy)

    sdk_config: dict[str, Any] = {
        "clientId": flow.client_id,
        "flowId": flow.flow_id,
        "endpoints": {"socket": endpoints.socket, "socketPath": "/socket.io", "whep": endpoints.whep},
        "genui": {"enabled": flow.genui_enabled},
        "peerName": "Visitor",
    }
    if flow.turn_override:
        sdk_config["turn"] = {k: v for k, v in flow.turn_override.items() if v is not None}
    config = {**common, "sdk": sdk_config, "libraries": GENUI_LIBRARIES if flow.genui_enabled else {}}
    policy = PagePolicy(
        script_urls=scripts,
        style_hashes=SOCKET_STYLE_HASHES.get(flow.sdk_version, ()),
        connect_origins=_socket_origins(endpoints),
        frame_origins=tuple(flow.genui_origins),
        media_origins=tuple(flow.genui_origins),
        frame_ancestors=frame_ancestors,
    )
    return PageView("pages/socket.html", config, policy)
