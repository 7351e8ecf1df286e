"""Where the relay's upstream socket connects: the flow's socket endpoint, WebSocket transport only."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from server.relay.upstream import socket_url


def test_https_endpoints_become_wss_with_the_engine_io_query() -> None:
    url = socket_url(
        "https://conversation.avatar.us.kaltura.ai", "socket.io", {"client": "c 1", "flowId": "f"}
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "wss",
        "conversation.avatar.us.kaltura.ai",
        "/socket.io/",
    )
    assert parse_qs(parts.query) == {
        "client": ["c 1"],
        "flowId": ["f"],
        "EIO": ["4"],
        "transport": ["websocket"],
    }


def test_a_path_prefix_on_the_endpoint_is_kept() -> None:
    assert socket_url("http://127.0.0.1:9100/avatar/", "socket.io", {}) == (
        "ws://127.0.0.1:9100/avatar/socket.io/?EIO=4&transport=websocket"
    )


def test_the_query_cannot_override_the_transport() -> None:
    query = parse_qs(
        urlsplit(socket_url("https://h", "socket.io", {"transport": "polling", "EIO": "3"})).query
    )
    assert (query["transport"], query["EIO"]) == (["websocket"], ["4"])
