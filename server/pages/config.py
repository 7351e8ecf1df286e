"""Build what a hosted page needs: the JSON config its script reads and the CSP it runs under."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.models import Flow
from server.sdk import SOCKET_STYLE_HASHES, ScriptSource
from server.sdk_options import SdkOptions, stored_options
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
VISUAL_VIDEO = "showVisualVideo"  # the SDK's one default pause type
_REGION = re.compile(r"avatar\.([a-z0-9]+)\.kaltura")


def turn_servers(socket_url: str) -> list[str]:
    """The TURN URLs the Socket SDK would derive from the service's socket URL. The SDK's socket URL is our
    own origin, so it would always pick the US servers: the page gets its flow's region's explicitly."""
    match = _REGION.search(socket_url)
    host = f"turn.avatar.{match.group(1) if match else 'us'}.kaltura.ai"
    return [
        f"turn:{host}:80?transport=udp",
        f"turn:{host}:443?transport=udp",
        f"turn:{host}:80?transport=tcp",
        f"turns:{host}:443?transport=tcp",
    ]


def page_commands(commands: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Spoken commands as the page script reads them: one phrase or one pattern each."""
    out = []
    for command in commands:
        kind = "pattern" if command.get("pattern") else "phrase"
        out.append({kind: command[kind], "action": command.get("action", "end")})
    return out


def captions_config(options: SdkOptions) -> dict[str, Any]:
    """Always explicit: with `enabled` unset the SDK reads a stored choice, and its caption button then
    changes nothing until the page is reloaded."""
    captions = options.captions
    config: dict[str, Any] = {"enabled": captions.enabled, "position": captions.position}
    style = captions.style
    for key, value in (
        ("fontSize", style.font_size),
        ("fontFamily", style.font_family),
        ("textColor", style.text_color),
        ("backgroundColor", style.background_color),
    ):
        if value is not None:
            config[key] = value
    if captions.replacements:
        config["replacements"] = dict(captions.replacements)
    return config


def genui_config(enabled: bool, options: SdkOptions) -> dict[str, Any]:
    """With GenUI off nothing may pause the conversation (the SDK pauses and mutes before it checks whether
    GenUI is on)."""
    config: dict[str, Any] = {"enabled": enabled}
    if not enabled:
        config["pauseTypes"] = []
        return config
    config["pauseTypes"] = list(
        options.genui.pause_types if options.genui.pause_types is not None else [VISUAL_VIDEO]
    )
    if options.genui.sticky_types is not None:
        config["stickyTypes"] = list(options.genui.sticky_types)
    return config


def queue_config(options: SdkOptions) -> dict[str, Any]:
    config: dict[str, Any] = {
        "enabled": options.queue.enabled,
        "maxWaitMs": options.queue.max_wait_seconds * 1000,
    }
    if options.queue.poll_seconds is not None:
        config["delays"] = [seconds * 1000 for seconds in options.queue.poll_seconds]
    return config


def socket_sdk_options(flow: Flow, options: SdkOptions, socket_url: str) -> dict[str, Any]:
    """The Socket SDK constructor options a flow's settings produce (without credentials and endpoints)."""
    config: dict[str, Any] = {
        "genui": genui_config(flow.genui_enabled, options),
        "captions": captions_config(options),
        "queue": queue_config(options),
        "autoReconnect": options.reconnect.auto,
        "maxReconnectAttempts": options.reconnect.attempts,
        "reconnectBaseDelay": options.reconnect.base_delay_ms,
        "connectionTimeout": options.connection_timeout_ms,
        "transcriptEnabled": options.record_transcript,
        "debug": options.debug,
        "peerName": "Visitor",
    }
    if options.audio_only:
        config["media"] = {"audioOnly": True}
    override = flow.turn_override or {}
    if override.get("urls"):  # never an empty list: the browser refuses such an ICE server
        config["turn"] = {k: v for k, v in override.items() if v is not None}
    else:
        config["turn"] = {"urls": turn_servers(socket_url)}
    return config


def iframe_sdk_config(options: SdkOptions, api_base: str, meet: str) -> dict[str, Any]:
    """The Iframe SDK's `config` a flow's settings produce; its iframe styles replace the SDK's defaults."""
    config: dict[str, Any] = {"apiBaseUrl": api_base, "meetBaseUrl": meet, "debug": options.debug}
    if options.iframe.class_name:
        config["iframeClass"] = options.iframe.class_name
    if options.iframe.styles:
        config["iframeStyles"] = dict(options.iframe.styles)
    return config


def page_options(options: SdkOptions) -> dict[str, Any]:
    """What the page script itself does with a flow's options (not SDK settings)."""
    return {
        "recordTranscript": options.record_transcript,
        "peerNameField": options.peer_name_field,
        "audioOnly": options.audio_only,
    }


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
    options = stored_options(flow.sdk_options)
    frame_ancestors = tuple(flow.allowed_origins) or ("'self'",)
    common: dict[str, Any] = {
        "mode": flow.sdk_mode,
        "flow": {"slug": flow.slug, "name": flow.display_name},
        "simulator": simulator,
        "commands": page_commands(flow.spoken_commands),
        "options": page_options(options),
        "session": {"id": session_id, "token": session_token},
    }
    scripts = (sdk.src,) if sdk.from_cdn else ()
    # The SDK gets our session token and the slug; the relay puts the real ids in on the way upstream.
    credentials = {"clientId": session_token, "flowId": flow.slug}
    if flow.sdk_mode == "iframe":
        meet = origin_of(endpoints.meet)
        iframe_config = iframe_sdk_config(options, IFRAME_API_BASE, meet)
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
        **socket_sdk_options(flow, options, endpoints.socket),
    }
    config = {**common, "sdk": sdk_config, "libraries": GENUI_LIBRARIES if flow.genui_enabled else {}}
    policy = PagePolicy(
        script_urls=scripts,
        style_hashes=SOCKET_STYLE_HASHES.get(flow.sdk_version, ()),
        frame_origins=tuple(flow.genui_origins),
        media_origins=tuple(flow.genui_origins),
        frame_ancestors=frame_ancestors,
        # showVisualVideo frames ask for autoplay (and mic and camera, which a video never gets from us).
        autoplay_delegates=tuple(flow.genui_origins),
    )
    return PageView("pages/socket.html", config, policy)
