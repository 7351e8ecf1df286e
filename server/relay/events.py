"""What the relay lets through and what it rewrites on the way. Pure functions over plain data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Everything the Socket SDK 2.7.4 emits (../protocol/socket.md); anything else from a browser is dropped.
CLIENT_EVENTS = frozenset(
    [
        "isValidSession",
        "join",
        "stvNewSession",
        "approvedPermissions",
        "setDynamicPrompt",
        "onTextEntered",
        "pauseConversation",
        "resumeConversation",
        "contactInfoReceived",
        "contactInfoRejected",
        "userCameraShot",
        "userScreenShareShot",
        "checkAvailability",
        "asr-webrtc-init",
        "asr-webrtc-offer",
        "asr-webrtc-ice-candidate",
        "webrtc-create-offer",
        "webrtc-answer",
        "webrtc-ice-candidate",
        "onHtmlElementClick",
        "codeBlockComplete",
    ]
)

# Payload fields that carry the vendor credentials the page never sees.
CREDENTIAL_FIELDS = {"client": "client_id", "flowId": "flow_id"}


@dataclass(frozen=True)
class RelayContext:
    """Per-connection facts the rewrites need."""

    client_id: str  # the flow's real Kaltura client id
    flow_id: str  # the flow's real flow id
    upstream_sid: str  # our upstream socket's id (the SDK sends its own id where upstream expects this)
    whep_url_for: Callable[[str], str]  # upstream WHEP URL → our signed proxy URL


def rewrite_client_event(event: str, args: tuple[Any, ...], ctx: RelayContext) -> tuple[Any, ...]:
    """Arguments the upstream should see for an event coming from the browser."""
    if not args or not isinstance(args[0], dict):
        return args
    payload = dict(args[0])
    for field, attribute in CREDENTIAL_FIELDS.items():
        if field in payload:
            payload[field] = getattr(ctx, attribute)
    if event == "asr-webrtc-init" and "sessionId" in payload:
        payload["sessionId"] = ctx.upstream_sid
    return (payload, *args[1:])


def rewrite_upstream_event(event: str, args: tuple[Any, ...], ctx: RelayContext) -> tuple[Any, ...]:
    """Arguments the browser should see for an event coming from upstream.

    Only URLs the browser must reach are rewritten: everything else passes through untouched.
    """
    if event == "stvNewSession" and args and isinstance(args[0], dict):
        url = args[0].get("webrtc_url")
        if isinstance(url, str) and url:
            return ({**args[0], "webrtc_url": ctx.whep_url_for(url)}, *args[1:])
    return args


def upstream_query(browser_query: dict[str, str], ctx: RelayContext) -> dict[str, str]:
    """The SDK's handshake query with the real ids in place of the page's session token and slug."""
    return {**browser_query, "client": ctx.client_id, "flowId": ctx.flow_id}
