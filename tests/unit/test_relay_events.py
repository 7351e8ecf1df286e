"""Relay rewrites: credentials swapped in, WHEP URLs moved to our origin, nothing else touched."""

from __future__ import annotations

from server.relay.events import (
    CLIENT_EVENTS,
    RelayContext,
    rewrite_client_event,
    rewrite_upstream_event,
    upstream_query,
)

CTX = RelayContext(client_id="real-client", flow_id="real-flow", upstream_sid="up-sid",
                   whep_url_for=lambda url: f"/relay/whep/signed({url})")  # fmt: skip


def test_credentials_in_client_payloads_become_the_real_ids() -> None:
    for event in ("isValidSession", "join", "stvNewSession"):
        (payload,) = rewrite_client_event(
            event, ({"client": "page-token", "flowId": "demo", "room": "r1"},), CTX
        )
        assert payload == {"client": "real-client", "flowId": "real-flow", "room": "r1"}


def test_asr_session_id_becomes_the_upstream_socket_id() -> None:
    assert rewrite_client_event("asr-webrtc-init", ({"sessionId": "browser-sid"},), CTX) == (
        {"sessionId": "up-sid"},
    )


def test_other_payloads_pass_untouched() -> None:
    args = ({"text": "hello", "isFinal": True},)
    assert rewrite_client_event("onTextEntered", args, CTX) == args
    assert rewrite_client_event("webrtc-create-offer", (), CTX) == ()
    assert rewrite_client_event("userCameraShot", ("not a dict",), CTX) == ("not a dict",)


def test_webrtc_url_is_moved_to_our_proxy() -> None:
    url = "https://srs-origin-3.avatar.us.kaltura.ai/rtc/v1/whep/?app=app&stream=s1"
    (payload,) = rewrite_upstream_event("stvNewSession", ({"session_id": "s1", "webrtc_url": url},), CTX)
    assert payload == {"session_id": "s1", "webrtc_url": f"/relay/whep/signed({url})"}


def test_upstream_events_without_urls_pass_untouched() -> None:
    assert rewrite_upstream_event("stvNewSession", ({"session_id": "s1"},), CTX) == ({"session_id": "s1"},)
    assert rewrite_upstream_event("showChart", ({"mediaUrl": "{}"},), CTX) == ({"mediaUrl": "{}"},)


def test_handshake_query_carries_the_real_ids_and_the_rest_unchanged() -> None:
    query = {
        "client": "token",
        "flowId": "demo",
        "stickyId": "abc",
        "level": "published",
        "debugMode": "true",
    }
    assert upstream_query(query, CTX) == {**query, "client": "real-client", "flowId": "real-flow"}


def test_allowlist_covers_the_sdk_and_nothing_invented() -> None:
    assert {"join", "setDynamicPrompt", "onTextEntered", "asr-webrtc-init"} <= CLIENT_EVENTS
    assert "debug_text_entered" not in CLIENT_EVENTS and "conversationEnded" not in CLIENT_EVENTS
