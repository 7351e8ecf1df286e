"""A client that never finishes its request headers loses the connection instead of holding it for ever."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.importer import import_from_string

from server.security.slow_clients import HTTP_PROTOCOL, HeaderDeadlineProtocol
from tests.support import free_port

DEADLINE = 0.5


class QuickDeadline(HeaderDeadlineProtocol):
    header_timeout = DEADLINE


async def hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.fixture
def server() -> Iterator[str]:
    app = Starlette(routes=[Route("/", hello)])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=QuickDeadline)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.02)
    yield f"127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection within `seconds` (trickling a byte now and then)."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            try:
                sock.sendall(b"X")  # one more byte of a header line that never ends
            except OSError:
                return True
        except OSError:
            return True
    return False


def test_serve_uses_the_header_deadline() -> None:
    assert issubclass(import_from_string(HTTP_PROTOCOL), HeaderDeadlineProtocol)


def test_trickled_or_missing_headers_are_cut_off_and_normal_requests_still_work(server: str) -> None:
    host, port = server.split(":")
    silent = [socket.create_connection((host, int(port))) for _ in range(20)]
    trickling = [socket.create_connection((host, int(port))) for _ in range(20)]
    for sock in trickling:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert httpx.get(f"http://{server}/").text == "hello"
    started = time.monotonic()
    assert all(closed_within(sock, DEADLINE + 2) for sock in silent + trickling)
    assert time.monotonic() - started < DEADLINE + 2
    for sock in silent + trickling:
        sock.close()


def test_each_request_on_a_kept_alive_connection_gets_its_own_deadline(server: str) -> None:
    host, port = server.split(":")
    with socket.create_connection((host, int(port))) as sock:
        for _ in range(3):  # more time in all than one deadline: each complete request starts afresh
            time.sleep(DEADLINE / 3)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello"):
                answer += sock.recv(4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert closed_within(sock, DEADLINE + 2)
