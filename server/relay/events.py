"""What the relay lets through and what it rewrites on the way. Pure functions over plain data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import urlsplit

from server.relay import genui
from server.sdk_options import GenuiType

# Everything the Socket SDK 2.7.4 emits (docs/protocol.md#client-to-server); the rest is dropped.
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

# Everything the service sends that the Socket SDK 2.7.4 knows (docs/protocol.md#server-to-client). Used only
# to name events in metrics: the relay forwards whatever upstream sends.
SERVER_EVENTS = frozenset(
    [
        "onServerConnected",
        "validSession",
        "clientConfiguration",
        "joinComplete",
        "stvNewSession",
        "askPermissions",
        "showAgent",
        "generatingSpeech",
        "debug_stvTaskGenerated",
        "stvStartedTalking",
        "stvSpeechChunk",
        "stvFinishedGenerating",
        "stvFinishedTalking",
        "userStartedTalking",
        "debug_vad_speech_detected",
        "agentTurnToTalk",
        "conversationEnded",
        "conversationTimeExpired",
        "conversationTimeWarning",
        "flowConfigError",
        "throwToNoAgent",
        "throwToExceededTier",
        "availabilityResult",
        "stvTaskFail",
        "debug_conversationStateChange",
        "contactCollector",
        *get_args(GenuiType),
        "hideVisuals",
        "hideCode",
        "hideDiagram",
        "hideIFrame",
        "hideMedia",
        "hideGeneratedImages",
        "asr-webrtc-ready",
        "asr-webrtc-answer",
        "asr-webrtc-error",
        "asr-ice-candidate",
        "webrtc-offer",
        "webrtc-ice-candidate",
    ]
)
TO_UPSTREAM, TO_BROWSER = "to_upstream", "to_browser"
RELAY_EVENT_NAMES = {TO_UPSTREAM: CLIENT_EVENTS, TO_BROWSER: SERVER_EVENTS}  # the names metrics may use

# Payload keys that carry vendor credentials: the page never chooses them, at any depth of any argument.
CREDENTIAL_FIELDS = ("client", "flowId", "billed_client", "ks")
# What the SDK 2.7.4 puts in its handshake query besides the ids (docs/protocol.md), with fixed values.
FIXED_QUERY = {"billed_client": "", "debugMode": "true", "ks": "", "level": "published"}
STICKY_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@dataclass(frozen=True)
class RelayContext:
    """Per-connection facts the rewrites need."""

    client_id: str  # the flow's real Kaltura client id
    flow_id: str  # the flow's real flow id
    upstream_sid: str  # our upstream socket's id (the SDK sends its own id where upstream expects this)
    whep_url_for: Callable[[str], str]  # upstream WHEP URL → our signed proxy URL


def scrub_credentials(value: Any, ctx: RelayContext) -> Any:
    """`value` with every credential key, however deep, set to what the flow says (the real id or empty)."""
    if isinstance(value, list):
        return [scrub_credentials(item, ctx) for item in value]
    if not isinstance(value, dict):
        return value
    fixed = {"client": ctx.client_id, "flowId": ctx.flow_id}
    return {
        key: (fixed.get(key, "") if key in CREDENTIAL_FIELDS else scrub_credentials(item, ctx))
        for key, item in value.items()
    }


def rewrite_client_event(event: str, args: tuple[Any, ...], ctx: RelayContext) -> tuple[Any, ...]:
    """Arguments the upstream should see for an event (or, with event "", an ack) from the browser."""
    scrubbed = tuple(scrub_credentials(arg, ctx) for arg in args)
    if (
        event == "asr-webrtc-init"
        and scrubbed
        and isinstance(scrubbed[0], dict)
        and "sessionId" in scrubbed[0]
    ):
        scrubbed = ({**scrubbed[0], "sessionId": ctx.upstream_sid}, *scrubbed[1:])
    return scrubbed


def rewrite_upstream_event(event: str, args: tuple[Any, ...], ctx: RelayContext) -> tuple[Any, ...]:
    """Arguments the browser should see for an event coming from upstream.

    Only URLs the browser must reach are rewritten: everything else passes through untouched.
    """
    if event == "stvNewSession" and args and isinstance(args[0], dict) and "webrtc_url" in args[0]:
        url = args[0]["webrtc_url"]
        if isinstance(url, str) and proxyable_url(url):
            return ({**args[0], "webrtc_url": ctx.whep_url_for(url)}, *args[1:])
        # Unusable: without a webrtc_url the SDK falls back to the page's WHEP endpoint, then to audio.
        payload = {k: v for k, v in args[0].items() if k != "webrtc_url"}
        return (payload, *args[1:])
    return args


def proxyable_url(url: str) -> bool:
    """An absolute http(s) URL with a host and a valid port, such as the WHEP proxy can forward to."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for `host:1:2` or a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def upstream_query(browser_query: dict[str, str], ctx: RelayContext) -> dict[str, str]:
    """The SDK's handshake query rebuilt from fixed values and the real ids; only a well-formed `stickyId`
    (the SDK's 16 random characters) is taken from the browser."""
    query = {"client": ctx.client_id, "flowId": ctx.flow_id, **FIXED_QUERY}
    sticky = browser_query.get("stickyId", "")
    if 0 < len(sticky) <= 64 and set(sticky) <= STICKY_ID_CHARS:
        query["stickyId"] = sticky
    return query


# Socket.IO packet types the relay forwards (everything else is python-socketio's business).
EVENT, ACK, BINARY_EVENT, BINARY_ACK = "2", "3", "5", "6"
RELAYED_TYPES = frozenset((EVENT, ACK, BINARY_EVENT, BINARY_ACK))
CREDENTIAL_MARKERS = re.compile(
    "|".join(re.escape(m) for m in (*(f'"{key}"' for key in CREDENTIAL_FIELDS), "\\u"))
)
# Upstream events the relay reads (transcript tap, WHEP URL); all others are forwarded unread.
UPSTREAM_EVENTS_READ = frozenset(
    ["stvNewSession", "stvFinishedTalking", "agentTurnToTalk", "conversationEnded", "conversationTimeExpired"]
)


class Packet:
    """An encoded Socket.IO packet split at its JSON body, which stays undecoded until someone needs it.

    Wire form: type digit, then `<attachments>-` for binary types, `<namespace>,` unless it is "/",
    the ack id digits, and the JSON body. A plain class, its event name read once: the relay builds one per
    packet in each direction, and a frozen dataclass's `__init__` and a property read at each use cost it
    ~3 µs a round trip.
    """

    __slots__ = ("attachments", "body", "event", "head", "kind", "namespace")

    def __init__(self, kind: str, attachments: int, namespace: str, head: str, body: str) -> None:
        self.kind = kind
        self.attachments = attachments
        self.namespace = namespace
        self.head = head  # everything before the body, kept verbatim so a rewrite keeps the ack id
        self.body = body
        # The event name of an event packet, read without decoding the body (None if unusual).
        self.event: str | None = None
        if kind in (EVENT, BINARY_EVENT) and body[:2] == '["':
            end = body.find('"', 2)
            if end > 2 and "\\" not in body[2:end]:
                self.event = body[2:end]

    def args(self) -> list[Any] | None:
        """The decoded body of an event packet: [name, *args], or None when it is not that shape."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data if isinstance(data, list) and data and isinstance(data[0], str) else None

    def with_args(self, args: list[Any]) -> str:
        return self.head + json.dumps(args, separators=(",", ":"))


def parse_packet(raw: str) -> Packet | None:
    """Split an event or ack packet; None for other types or a malformed head."""
    kind = raw[:1]
    if kind not in RELAYED_TYPES:
        return None
    if raw[1:2] == "[" and kind in (EVENT, ACK):  # nearly every packet: "/", no ack id
        return Packet(kind, 0, "/", kind, raw[1:])
    i, attachments = 1, 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        dash = raw.find("-", 1)
        if dash < 2 or not raw[1:dash].isdigit():
            return None
        attachments, i = int(raw[1:dash]), dash + 1
    namespace = "/"
    if raw.startswith("/", i):
        comma = raw.find(",", i)
        if comma < 0:
            return None
        namespace, i = raw[i:comma], comma + 1
    while i < len(raw) and raw[i].isdigit():
        i += 1
    return Packet(kind, attachments, namespace, raw[:i], raw[i:])


def client_packet_for_upstream(packet: Packet, raw: str, ctx: RelayContext) -> str | None:
    """The packet to send upstream for an event or ack from the browser, rewritten only where it must be.

    A body that mentions no credential key (and is no ASR init) goes out byte for byte; None: malformed.
    """
    body = packet.body
    # A \u escape could spell a credential key that the substring test misses: such bodies are decoded.
    if packet.event != "asr-webrtc-init" and CREDENTIAL_MARKERS.search(body) is None:
        return raw
    if packet.kind in (ACK, BINARY_ACK):
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, list):
            return None
        return packet.with_args(list(rewrite_client_event("", tuple(data), ctx)))
    args = packet.args()
    if args is None:
        return None
    return packet.with_args([args[0], *rewrite_client_event(args[0], tuple(args[1:]), ctx)])


def upstream_packet_for_browser(packet: Packet, raw: str, ctx: RelayContext) -> tuple[str, list[Any] | None]:
    """The packet to send the browser, and the decoded event when the relay needs to read it."""
    if packet.event in genui.HTML_EVENTS and (html_args := packet.args()) is not None:
        return packet.with_args(genui.sanitise_event(html_args)), None
    if packet.event not in UPSTREAM_EVENTS_READ:
        return raw, None
    args = packet.args()
    if args is None:
        return raw, None
    if args[0] == "stvNewSession":
        rewritten = [args[0], *rewrite_upstream_event(args[0], tuple(args[1:]), ctx)]
        return packet.with_args(rewritten), rewritten
    return raw, args
