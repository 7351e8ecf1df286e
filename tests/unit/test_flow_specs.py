"""Flow definitions are validated before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.flows import FlowImportError, FlowSpec, check_upstream_hosts
from server.upstreams import endpoints_for, host_allowed

BASE: dict[str, Any] = {"slug": "shop", "display_name": "Shop", "client_id": "c1", "flow_id": "f1"}
CUSTOM = {name: f"https://{name}.avatar.us.kaltura.ai" for name in ("socket", "whep", "api", "meet")}


def test_defaults_end_the_call_on_the_closing_phrase() -> None:
    spec = FlowSpec(**BASE)
    assert [c.phrase for c in spec.spoken_commands] == ["Ending call now."]
    assert spec.upstream == "kaltura-us" and spec.sdk_mode == "socket"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"sdk_version": "v9.9.9"}, "not pinned"),
        ({"allowed_origins": ["https://ok.example/path"]}, "not an origin"),
        ({"upstream": "custom"}, "needs custom_endpoints"),
        ({"custom_endpoints": CUSTOM}, "only allowed with upstream 'custom'"),
        ({"turn_override": {"urls": ["http://x"]}}, "stun:"),
        ({"client_id": "has space"}, "client_id"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_flows_are_refused_with_a_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FlowSpec(**{**BASE, **change})


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://m.avatar.us.kaltura.ai;script-src-elem * 'unsafe-inline';x@m.avatar.us.kaltura.ai",
        "https://user@m.avatar.us.kaltura.ai",
        "https://m.avatar.us.kaltura.ai/path",
        "https://m.avatar.us.kaltura.ai?q=1",
        "https://m.avatar.us.kaltura.ai#f",
        "https://m.avatar.us.kaltura.ai ",
        "https://m.avatar.us.kaltura.ai\n",
        "https://m.avatar.us.kaltura.ai,https://evil.example",
        'https://m.avatar.us.kaltura.ai"',
        "https://m.avatar.us.kaltura.ai:99999",
        "https://-bad-.example",
        "ftp://m.avatar.us.kaltura.ai",
    ],
)
def test_custom_endpoints_are_bare_origins(endpoint: str) -> None:
    endpoints = {**CUSTOM, "meet": endpoint}
    with pytest.raises(ValidationError, match=r"custom_endpoints\.meet"):
        FlowSpec(**{**BASE, "upstream": "custom", "custom_endpoints": endpoints})


def test_embedding_origins_refuse_a_trailing_newline() -> None:
    with pytest.raises(ValidationError, match="not an origin"):
        FlowSpec(**{**BASE, "allowed_origins": ["https://shop.example\n"]})


def test_custom_endpoints_must_be_on_allowed_hosts() -> None:
    spec = FlowSpec(
        **{**BASE, "upstream": "custom", "custom_endpoints": {**CUSTOM, "api": "https://evil.example"}}
    )
    with pytest.raises(FlowImportError, match=r"custom_endpoints\.api"):
        check_upstream_hosts(spec, ["*.avatar.us.kaltura.ai"])


def test_host_patterns() -> None:
    assert host_allowed("https://srs-origin-3.avatar.us.kaltura.ai/rtc", ["*.avatar.us.kaltura.ai"])
    assert not host_allowed("https://avatar.us.kaltura.ai.evil.example", ["*.avatar.us.kaltura.ai"])
    assert host_allowed("http://127.0.0.1:9100/x", ["127.0.0.1:9100"])
    assert not host_allowed("http://127.0.0.1:9101/x", ["127.0.0.1:9100"])
    assert not host_allowed("file:///etc/passwd", ["*"])
    injected = "https://m.avatar.us.kaltura.ai;script-src-elem *;x@m.avatar.us.kaltura.ai"
    assert not host_allowed(injected, ["*.avatar.us.kaltura.ai"])


def test_upstream_names_resolve_to_endpoints() -> None:
    assert endpoints_for("kaltura-eu", None, "").socket == "https://conversation.avatar.eu.kaltura.ai"
    assert endpoints_for("simulator", None, "http://127.0.0.1:9100").meet == "http://127.0.0.1:9100"
    assert endpoints_for("custom", CUSTOM, "").whep == CUSTOM["whep"]
