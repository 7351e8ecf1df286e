"""Per-flow SDK options: what is refused (naming the field), and the exact SDK configuration each produces."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.flows import FlowSpec
from server.models import Flow
from server.pages.config import build_page, turn_servers
from server.sdk import ScriptSource
from server.sdk_options import check_pattern
from server.security.csp import permissions_policy
from server.upstreams import endpoints_for

BASE: dict[str, Any] = {"slug": "shop", "display_name": "Shop", "client_id": "c1", "flow_id": "f1"}
SDK = ScriptSource("/static/sdk.js", "sha384-x", from_cdn=False)
REGION_TURN = turn_servers("https://conversation.avatar.us.kaltura.ai")


def page_config(**fields: Any) -> dict[str, Any]:
    """The config a hosted page of this flow gets (built as the page route builds it, from the stored row)."""
    spec = FlowSpec(**{**BASE, **fields})
    flow = Flow(**spec.model_dump(exclude={"dpp_template"}, mode="json"))
    endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, "http://127.0.0.1:9")
    view = build_page(flow, endpoints, SDK, None, "sid", "token")
    return view.config


def test_a_flow_without_options_gets_the_sdks_defaults_spelled_out() -> None:
    sdk = page_config()["sdk"]
    assert sdk["captions"] == {"enabled": False, "position": "bottom"}
    assert sdk["queue"] == {"enabled": True, "maxWaitMs": 0}
    assert (sdk["autoReconnect"], sdk["maxReconnectAttempts"], sdk["reconnectBaseDelay"]) == (True, 5, 1000)
    assert sdk["connectionTimeout"] == 15000
    assert sdk["transcriptEnabled"] is True and sdk["debug"] is False
    assert sdk["genui"] == {"enabled": True, "pauseTypes": ["showVisualVideo"]}
    assert "media" not in sdk


# Each row: the flow's sdk_options (or other fields), the mode, and the SDK configuration they must produce.
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    (
        "captions",
        {
            "sdk_options": {
                "captions": {
                    "enabled": True,
                    "position": "top",
                    "style": {
                        "font_size": 22,
                        "text_color": "#ffcc00",
                        "background_color": "rgba(0,0,0,0.6)",
                    },
                    "replacements": {"Kaltura": "Kal-tura"},
                }
            }
        },
        "socket",
        {
            "captions": {
                "enabled": True,
                "position": "top",
                "fontSize": 22,
                "textColor": "#ffcc00",
                "backgroundColor": "rgba(0,0,0,0.6)",
                "replacements": {"Kaltura": "Kal-tura"},
            }
        },
    ),
    (
        "queue",
        {"sdk_options": {"queue": {"max_wait_seconds": 90}}},
        "socket",
        {"queue": {"enabled": True, "maxWaitMs": 90000}},
    ),
    (
        "queue polls",
        {"sdk_options": {"queue": {"max_wait_seconds": 60, "poll_seconds": [1, 5]}}},
        "socket",
        {"queue": {"enabled": True, "maxWaitMs": 60000, "delays": [1000, 5000]}},
    ),
    (
        "queue off",
        {"sdk_options": {"queue": {"enabled": False}}},
        "socket",
        {"queue": {"enabled": False, "maxWaitMs": 0}},
    ),
    (
        "reconnect",
        {"sdk_options": {"reconnect": {"auto": False, "attempts": 2, "base_delay_ms": 500}}},
        "socket",
        {"autoReconnect": False, "maxReconnectAttempts": 2, "reconnectBaseDelay": 500},
    ),
    ("timeout", {"sdk_options": {"connection_timeout_ms": 5000}}, "socket", {"connectionTimeout": 5000}),
    ("audio only", {"sdk_options": {"audio_only": True}}, "socket", {"media": {"audioOnly": True}}),
    ("no transcript", {"sdk_options": {"record_transcript": False}}, "socket", {"transcriptEnabled": False}),
    ("debug", {"sdk_options": {"debug": True}}, "socket", {"debug": True}),
    (
        "genui types",
        {"sdk_options": {"genui": {"sticky_types": ["showChart"], "pause_types": []}}},
        "socket",
        {"genui": {"enabled": True, "pauseTypes": [], "stickyTypes": ["showChart"]}},
    ),
    # GenUI off: nothing may pause (and mute) the conversation behind the page's back.
    (
        "genui off",
        {"genui_enabled": False, "sdk_options": {"genui": {"pause_types": ["showVisualVideo"]}}},
        "socket",
        {"genui": {"enabled": False, "pauseTypes": []}},
    ),
    ("US TURN", {"upstream": "kaltura-us"}, "socket", {"turn": {"urls": REGION_TURN}}),
    (
        "EU TURN",
        {"upstream": "kaltura-eu"},
        "socket",
        {"turn": {"urls": turn_servers("https://conversation.avatar.eu.kaltura.ai")}},
    ),
    (
        "TURN override",
        {"turn_override": {"urls": ["turn:t.example:3478"], "username": "u", "credential": "p"}},
        "socket",
        {
            "turn": {
                "urls": ["turn:t.example:3478"],
                "username": "u",
                "credential": "p",
                "iceTransportPolicy": "relay",
            }
        },
    ),
    (
        "iframe element",
        {
            "sdk_options": {
                "debug": True,
                "iframe": {"class_name": "avatar big", "styles": {"height": "480px"}},
            }
        },
        "iframe",
        {"config": {"debug": True, "iframeClass": "avatar big", "iframeStyles": {"height": "480px"}}},
    ),
]


@pytest.mark.parametrize(("fields", "mode", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_options_produce_the_documented_sdk_configuration(
    fields: dict[str, Any], mode: str, expected: dict[str, Any]
) -> None:
    sdk = page_config(sdk_mode=mode, **fields)["sdk"]
    for key, value in expected.items():
        if key == "config":  # the Iframe SDK's overrides sit under `config`, next to our API and meeting URLs
            assert {k: sdk["config"][k] for k in value} == value
        else:
            assert sdk[key] == value, key


def test_eu_flows_get_eu_turn_servers() -> None:
    urls = page_config(upstream="kaltura-eu")["sdk"]["turn"]["urls"]
    assert urls and all("turn.avatar.eu.kaltura.ai" in url for url in urls)


def test_page_options_and_commands_reach_the_page_script() -> None:
    config = page_config(
        spoken_commands=[{"phrase": "Goodbye now"}, {"pattern": r"\bsee you\b"}],
        sdk_options={"record_transcript": False, "peer_name_field": "first_name"},
    )
    assert config["commands"] == [
        {"phrase": "Goodbye now", "action": "end"},
        {"pattern": r"\bsee you\b", "action": "end"},
    ]
    assert config["options"]["recordTranscript"] is False
    assert config["options"]["peerNameField"] == "first_name"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"captions": {"style": {"text_color": "red;background:url(x)"}}}, "text_color"),
        ({"captions": {"style": {"font_size": 200}}}, "font_size"),
        ({"captions": {"position": "middle"}}, "position"),
        ({"captions": {"replacements": {" ": "x"}}}, "replacement"),
        ({"queue": {"max_wait_seconds": -1}}, "max_wait_seconds"),
        ({"queue": {"poll_seconds": []}}, "poll_seconds"),
        ({"queue": {"poll_seconds": [0]}}, "poll_seconds"),
        ({"reconnect": {"attempts": 0}}, "attempts"),
        ({"connection_timeout_ms": 10}, "connection_timeout_ms"),
        ({"peer_name_field": "First Name"}, "peer_name_field"),
        ({"genui": {"pause_types": ["showEverything"]}}, "pause_types"),
        ({"iframe": {"class_name": 'a"b'}}, "class_name"),
        ({"iframe": {"styles": {"position": "fixed"}}}, "position"),
        ({"iframe": {"styles": {"height": "1px;background:url(x)"}}}, "height"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_invalid_options_are_refused_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        FlowSpec(**BASE, sdk_options=options)


def test_a_turn_override_needs_urls() -> None:
    with pytest.raises(ValidationError, match=r"turn_override\.urls"):
        FlowSpec(**BASE, turn_override={"urls": [], "username": "u"})
    with pytest.raises(ValidationError, match=r"turn_override\.urls"):
        FlowSpec(**BASE, turn_override={"username": "u"})


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({}, "exactly one"),
        ({"phrase": "bye", "pattern": "bye"}, "exactly one"),
        ({"pattern": "(unclosed"}, "not a valid regular expression"),
        ({"pattern": "(a+)+$"}, "nests repeats"),
        ({"pattern": r"(\w+\s?)*end"}, "nests repeats"),
        ({"pattern": "(?:x*){2,}"}, "nests repeats"),
        ({"pattern": r"(bye)\1"}, "back-references"),
        ({"pattern": "(?P<n>bye)"}, "JavaScript"),
        ({"pattern": r"bye\Z"}, "JavaScript"),
        ({"pattern": "x*"}, "matches empty text"),
        ({"pattern": "a" * 201}, "at most 200"),
    ],
)
def test_spoken_command_patterns_are_checked(command: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FlowSpec(**BASE, spoken_commands=[command])


@pytest.mark.parametrize(
    "pattern", [r"\b(good ?bye|farewell)\b", r"end(ing)? (the|this) call", r"[a-z]+ now\.", r"(ha){2,3}!"]
)
def test_ordinary_patterns_pass(pattern: str) -> None:
    assert check_pattern(pattern) == pattern


def test_options_survive_export_and_import_unchanged() -> None:
    spec = FlowSpec(**BASE, sdk_options={"captions": {"enabled": True}, "queue": {"max_wait_seconds": 30}})
    again = FlowSpec.model_validate_json(spec.model_dump_json())
    assert again.sdk_options == spec.sdk_options
    assert again.sdk_options.captions.enabled and again.sdk_options.queue.max_wait_seconds == 30


def test_genui_origins_may_autoplay_but_get_no_microphone_or_camera() -> None:
    spec = FlowSpec(**BASE, genui_origins=["https://videos.example"])
    flow = Flow(**spec.model_dump(exclude={"dpp_template"}, mode="json"))
    endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, "http://127.0.0.1:9")
    policy = build_page(flow, endpoints, SDK, None, "sid", "token").policy
    header = permissions_policy(policy.permission_delegates, policy.autoplay_delegates)
    assert 'autoplay=(self "https://videos.example")' in header
    assert "microphone=(self)" in header and "camera=(self)" in header


def test_a_stored_turn_override_without_urls_never_reaches_the_browser() -> None:
    """Rows from before the check (migration 0008 clears them too): the region's servers, not `urls: []`."""
    spec = FlowSpec(**BASE, upstream="kaltura-eu")
    flow = Flow(**spec.model_dump(exclude={"dpp_template"}, mode="json"))
    flow.turn_override = {"urls": [], "username": "u", "credential": "p"}
    endpoints = endpoints_for(flow.upstream, flow.custom_endpoints, "http://127.0.0.1:9")
    turn = build_page(flow, endpoints, SDK, None, "sid", "token").config["sdk"]["turn"]
    assert turn == {"urls": turn_servers("https://conversation.avatar.eu.kaltura.ai")}
