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
IFRAME_API_BASE = "/relay/iframe"  # the Iframe SDK's one API request goes through our relay
WHEP_UNAVAILABLE = "/relay/whep-unavailable"  # answers 404: the SDK then falls back to audio over the socket


@dataclass(frozen=True)
class PageView:
    template: str
    config: dict[str, Any]
    policy: PagePolicy


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
        "commands": flow.spoken_commands,
        "session": {"id": session_id, "token": session_token},
    }
    scripts = (sdk.src,) if sdk.from_cdn else ()
    # The SDK gets our session token and the slug; the relay puts the real ids in on the way upstream.
    credentials = {"clientId": session_token, "flowId": flow.slug}
    if flow.sdk_mode == "iframe":
        meet = origin_of(endpoints.meet)
        iframe_config = {"apiBaseUrl": IFRAME_API_BASE, "meetBaseUrl": meet}
        # The Iframe SDK takes the DPP by postMessage in the browser: it cannot be kept from the page.
        config = {**common, "dpp": dpp, "sdk": {**credentials, "config": iframe_config}}
        policy = PagePolicy(
            script_urls=scripts,
            frame_origins=(meet,),
            frame_ancestors=frame_ancestors,
            permission_delegates=(meet,),
        )
        return PageView("pages/iframe.html", config, policy)

    # Socket mode: no DPP in the page (it is the operator's prompt); the relay injects it upstream.
    sdk_config: dict[str, Any] = {
        **credentials,
        # socket: the page fills in its own origin; whep is only used when upstream sends no webrtc_url.
        "endpoints": {"socket": "", "socketPath": "/socket.io", "whep": WHEP_UNAVAILABLE},
        "genui": {"enabled": flow.genui_enabled},
        "peerName": "Visitor",
    }
    if flow.turn_override:
        sdk_config["turn"] = {k: v for k, v in flow.turn_override.items() if v is not None}
    config = {**common, "sdk": sdk_config, "libraries": GENUI_LIBRARIES if flow.genui_enabled else {}}
    policy = PagePolicy(
        script_urls=scripts,
        style_hashes=SOCKET_STYLE_HASHES.get(flow.sdk_version, ()),
        frame_origins=tuple(flow.genui_origins),
        media_origins=tuple(flow.genui_origins),
        frame_ancestors=frame_ancestors,
    )
    return PageView("pages/socket.html", config, policy)
