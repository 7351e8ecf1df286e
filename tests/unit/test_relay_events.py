"""Relay rewrites: credentials swapped in, WHEP URLs moved to our origin, nothing else touched."""

from __future__ import annotations

import json

from server.relay.events import (
    CLIENT_EVENTS,
    RelayContext,
    client_packet_for_upstream,
    parse_packet,
    rewrite_client_event,
    rewrite_upstream_event,
    upstream_packet_for_browser,
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


def test_an_unusable_webrtc_url_is_dropped_so_the_sdk_falls_back() -> None:
    for url in ("http://host:9170:5555/", "http://host:99999/", "/rtc/v1/whep/", "javascript:alert(1)", 7):
        (payload,) = rewrite_upstream_event("stvNewSession", ({"session_id": "s1", "webrtc_url": url},), CTX)
        assert payload == {"session_id": "s1"}


def test_upstream_events_without_urls_pass_untouched() -> None:
    assert rewrite_upstream_event("stvNewSession", ({"session_id": "s1"},), CTX) == ({"session_id": "s1"},)
    assert rewrite_upstream_event("showChart", ({"mediaUrl": "{}"},), CTX) == ({"mediaUrl": "{}"},)


def test_handshake_query_is_rebuilt_from_fixed_values_and_the_real_ids() -> None:
    query = {
        "client": "token",
        "flowId": "demo",
        "stickyId": "abcDEF0123456789",
        "level": "draft",
        "debugMode": "false",
        "billed_client": "someone-else",
        "ks": "browser-ks",
        "flow_id": "other-flow",
        "client_id": "other-client",
    }
    assert upstream_query(query, CTX) == {
        "client": "real-client",
        "flowId": "real-flow",
        "billed_client": "",
        "debugMode": "true",
        "ks": "",
        "level": "published",
        "stickyId": "abcDEF0123456789",
    }
    assert "stickyId" not in upstream_query({"stickyId": "x&ks=1"}, CTX)


def test_credential_keys_are_scrubbed_at_any_depth_in_any_argument() -> None:
    args = (
        {"room": "r", "meta": {"client": "evil", "list": [{"ks": "k", "flowId": "f"}]}},
        {"billed_client": "evil", "client": "evil"},
    )
    assert rewrite_client_event("join", args, CTX) == (
        {"room": "r", "meta": {"client": "real-client", "list": [{"ks": "", "flowId": "real-flow"}]}},
        {"billed_client": "", "client": "real-client"},
    )


def test_acks_from_the_browser_are_scrubbed_too() -> None:
    raw = '37[{"client":"evil","nested":{"ks":"k"}}]'
    packet = parse_packet(raw)
    assert packet is not None
    rewritten = client_packet_for_upstream(packet, raw, CTX)
    assert rewritten is not None and rewritten.startswith("37")
    assert json.loads(rewritten[2:]) == [{"client": "real-client", "nested": {"ks": ""}}]
    assert client_packet_for_upstream(parse_packet('3["ok"]') or packet, '3["ok"]', CTX) == '3["ok"]'


def test_allowlist_covers_the_sdk_and_nothing_invented() -> None:
    assert {"join", "setDynamicPrompt", "onTextEntered", "asr-webrtc-init"} <= CLIENT_EVENTS
    assert "debug_text_entered" not in CLIENT_EVENTS and "conversationEnded" not in CLIENT_EVENTS


def test_packets_are_split_at_the_body_with_ack_ids_and_attachments_kept() -> None:
    plain = parse_packet('2["onTextEntered",{"text":"hi"}]')
    assert plain is not None and (plain.kind, plain.head, plain.event) == ("2", "2", "onTextEntered")
    acked = parse_packet('217["checkAvailability",{}]')
    assert acked is not None and (acked.head, acked.event) == ("217", "checkAvailability")
    binary = parse_packet('51-3["userCameraShot",{"_placeholder":true,"num":0}]')
    assert binary is not None and (binary.attachments, binary.head, binary.event) == (
        1,
        "51-3",
        "userCameraShot",
    )
    other = parse_packet('2/admin,["x"]')
    assert other is not None and other.namespace == "/admin"
    ack = parse_packet("31[]")
    assert ack is not None and (ack.kind, ack.event) == ("3", None)


def test_unusual_packets_are_not_relayed_as_events() -> None:
    assert parse_packet('0{"sid":"x"}') is None  # connect: python-socketio's own business
    assert parse_packet('5x-["a"]') is None
    assert parse_packet('2/admin["a"]') is None
    for body in ('2["a\\"b",{}]', '2[""]', '2{"not":"a list"}', "2"):
        packet = parse_packet(body)
        assert packet is None or packet.event is None


def test_browser_packets_go_upstream_byte_for_byte_unless_a_rewrite_is_due() -> None:
    raw = '24["onTextEntered",{"isFinal":true,"text":"héllo"}]'
    packet = parse_packet(raw)
    assert packet is not None and client_packet_for_upstream(packet, raw, CTX) is raw
    for raw, expected in [
        ('2["join",{"client":"TOKEN","room":"r"}]', ["join", {"client": "real-client", "room": "r"}]),
        ('29["join",{"\\u0063lient":"other"}]', ["join", {"client": "real-client"}]),
        ('2["asr-webrtc-init",{"sessionId":"b"}]', ["asr-webrtc-init", {"sessionId": "up-sid"}]),
    ]:
        packet = parse_packet(raw)
        assert packet is not None
        rewritten = client_packet_for_upstream(packet, raw, CTX)
        assert rewritten is not None and rewritten.startswith(packet.head)
        assert json.loads(rewritten[len(packet.head) :]) == expected
    broken = parse_packet('2["join",{"client":')
    assert broken is not None and client_packet_for_upstream(broken, '2["join",{"client":', CTX) is None


def test_upstream_packets_are_read_only_when_the_relay_needs_them() -> None:
    raw = '2["showChart",{"mediaUrl":"{}"}]'
    packet = parse_packet(raw)
    assert packet is not None and upstream_packet_for_browser(packet, raw, CTX) == (raw, None)
    raw = '2["stvFinishedTalking",{"agentContent":"Hi"}]'
    packet = parse_packet(raw)
    assert packet is not None
    assert upstream_packet_for_browser(packet, raw, CTX) == (
        raw,
        ["stvFinishedTalking", {"agentContent": "Hi"}],
    )
    raw = '2["stvNewSession",{"webrtc_url":"https://x/whep"}]'
    packet = parse_packet(raw)
    assert packet is not None
    sent, event = upstream_packet_for_browser(packet, raw, CTX)
    assert (
        json.loads(sent[1:])
        == event
        == ["stvNewSession", {"webrtc_url": "/relay/whep/signed(https://x/whep)"}]
    )
