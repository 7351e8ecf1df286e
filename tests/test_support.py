"""The suite's own helpers fail loudly: a server that cannot start or stop, a condition that never holds."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support import ServerThread, eventually, eventually_async


async def hello(_: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_a_server_that_cannot_bind_its_port_fails_at_start_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerThread(Starlette(routes=[Route("/", hello)]), port=port)
        with pytest.raises(RuntimeError, match=f"stopped before it listened: port {port} is already in use"):
            server.__enter__()
        assert not server.thread.is_alive()


def test_a_server_that_does_not_stop_in_time_fails_instead_of_leaking() -> None:
    release = threading.Event()

    @asynccontextmanager
    async def slow_shutdown(_: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(release.wait)  # shutting down takes until the test says so

    server = ServerThread(Starlette(routes=[Route("/", hello)], lifespan=slow_shutdown), stop_timeout=0.5)
    with server:
        assert httpx.get(server.url).text == "hello"
        with pytest.raises(RuntimeError, match=r"did not stop within 0\.5 s"):
            server.stop()
        assert server.thread.is_alive()
        release.set()  # now it can finish: the second stop (leaving the block) succeeds
    assert not server.thread.is_alive()


def test_eventually_returns_the_first_accepted_value() -> None:
    started = time.monotonic()
    assert eventually(lambda: time.monotonic() - started, lambda elapsed: elapsed > 0.1) > 0.1


def test_eventually_fails_with_the_last_value_or_error() -> None:
    with pytest.raises(AssertionError, match=r"the count did not hold within 0\.2 s: the last value was 3"):
        eventually(lambda: 3, lambda n: n == 0, timeout=0.2, what="the count")
    with pytest.raises(AssertionError, match=r"the last value raised ZeroDivisionError"):
        eventually(lambda: 1 / 0, timeout=0.2)


async def test_eventually_async_awaits_async_conditions_and_keeps_the_loop_running() -> None:
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(len(ticks))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:

        async def count() -> int:
            return len(ticks)

        assert await eventually_async(count, lambda n: n >= 5) >= 5  # the ticker ran between polls
        with pytest.raises(AssertionError, match=r"the last value was \[\]"):
            await eventually_async(lambda: [], timeout=0.1)
    finally:
        task.cancel()
