"""`avatar-bff serve` after SIGTERM: relayed browsers are told to reconnect (elsewhere), every transcript line
the relay heard is written, and the process exits within a bounded time, whatever its clients are doing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.app import create_app
from server.conversations import timeline
from server.models import Conversation
from server.simulator import SimulatorConfig
from server.simulator import create_app as create_simulator
from tests.integration.test_relay import FakeSdk
from tests.support import (
    TEST_SECRET,
    ServerThread,
    database,
    db_session,
    free_port,
    prepared_settings,
    stop_process,
    stored_transcript,
    wait_until_up,
)

SCRIPT = [sys.executable, "-c", "from server.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[2]
GOODBYE_SCRIPT = Path(__file__).parent / "js" / "socket-goodbye.mjs"
GRACE_SECONDS = 2  # AVATAR_BFF_SHUTDOWN_GRACE_SECONDS for this test (10 by default)


def test_a_request_that_never_completes_does_not_hold_a_stop(tmp_path: Path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_BFF_")}
    environment.update(
        {
            "AVATAR_BFF_DATA_DIR": str(tmp_path),
            "AVATAR_BFF_ENVIRONMENT": "dev",
            "AVATAR_BFF_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        }
    )
    process = subprocess.Popen(
        [*SCRIPT, "serve", "--port", str(port)],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", timeout=30)
        with socket.create_connection(("127.0.0.1", port)) as slow:
            # A body announced and never sent: the request stays open until the server gives up on it.
            slow.sendall(
                b"POST /api/v1/page/transcript HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            )
            slow.sendall(b"Content-Length: 1000\r\n\r\n{")
            time.sleep(0.5)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=GRACE_SECONDS + 10)
        assert time.monotonic() - started < GRACE_SECONDS + 3
    finally:
        process.kill()
        process.wait(timeout=10)


class Sdk(FakeSdk):
    """The SDK-protocol client, noting whether the server sent it a Socket.IO disconnect: the SDK's socket
    then says `io server disconnect`, and the SDK reconnects on its own (a lost transport would also start
    socket.io-client's own retry, racing the SDK's)."""

    def __init__(self, transport: str) -> None:
        super().__init__()
        self.transport = transport
        self.told_to_go = False
        self.client.on("disconnect", self._gone)
        original = self.client._handle_disconnect  # the Socket.IO DISCONNECT packet

        async def disconnect_packet(namespace: str | None) -> None:
            self.told_to_go = True
            await original(namespace)

        self.client._handle_disconnect = disconnect_packet

    async def _gone(self, *_reason: Any) -> None:
        self.disconnected.set()

    def said(self) -> list[tuple[str, str]]:
        """The transcript lines this client saw, as the relay's tap records them."""
        lines = []
        for name, data in self.events:
            if name == "stvFinishedTalking":
                lines.append(("Avatar", data["agentContent"]))
            elif name == "agentTurnToTalk":
                lines.append(("User", data["userTranscription"]))
        return lines


def serve_process(directory: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_BFF_")}
    environment.update(
        {
            "AVATAR_BFF_DATA_DIR": str(directory),
            "AVATAR_BFF_ENVIRONMENT": "dev",
            "AVATAR_BFF_SECRET_KEY": TEST_SECRET,
            "AVATAR_BFF_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            **extra,
        }
    )
    with (directory / f"serve-{port}.log").open("wb") as log:  # the child keeps its own copy open
        return subprocess.Popen(
            [*SCRIPT, "serve", "--port", str(port)], env=environment, cwd=directory, stdout=log, stderr=log
        )


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_sigterm_mid_conversation_tells_the_browser_to_reconnect_and_keeps_every_line(
    tmp_path: Path, transport: str
) -> None:
    with ServerThread(create_simulator(SimulatorConfig(time_scale=0.02))) as simulator:
        settings = prepared_settings(tmp_path, simulator_url=simulator.url)
        port = free_port()
        process = serve_process(tmp_path, port, AVATAR_BFF_SIMULATOR_URL=simulator.url)
        try:
            url = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_until_up, f"{url}/healthz", 30)
            html = httpx.get(f"{url}/a/demo").text
            config = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])
            conversation_id, token = config["session"]["id"], config["session"]["token"]
            sdk = Sdk(transport)
            await sdk.connect(url, token, transports=[transport])
            await sdk.wait_for("showAgent")
            await sdk.client.emit("approvedPermissions", {})
            await sdk.wait_for("stvFinishedTalking")
            await sdk.client.emit("onTextEntered", {"isFinal": True, "text": "show me a table"})
            await sdk.wait_for("agentTurnToTalk")  # the relay has just tapped this line: it is still queued
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(sdk.disconnected.wait(), GRACE_SECONDS)
            assert sdk.told_to_go
            code = await asyncio.to_thread(process.wait, GRACE_SECONDS + 10)
            stopped_after = time.monotonic() - started
        finally:
            process.kill()
            process.wait(timeout=10)
    assert code == 0
    assert stopped_after < GRACE_SECONDS  # nothing was left to wait for: every socket had been told to go
    seen = sdk.said()
    assert len(seen) >= 2
    stored = [(entry.role, entry.text) for entry in await stored_transcript(settings, conversation_id)]
    assert stored[: len(seen)] == seen
    async with database(settings) as db:
        kinds = [event.kind for event in await timeline.events_of(db, conversation_id)]
    assert kinds[-1] == "handed_off"
    async with db_session(settings) as session:
        # Still active: the SDK's reconnect, on another instance, carries on with the same page token.
        status = await session.scalar(select(Conversation.status).where(Conversation.id == conversation_id))
    assert status == "active"


def test_a_stopping_server_is_not_ready_and_turns_new_sockets_away(tmp_path: Path) -> None:
    app = create_app(prepared_settings(tmp_path))
    with ServerThread(app) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        app.state.draining = True
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting_down"
        handshake = httpx.get(f"{server.url}/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert handshake.status_code == 503 and handshake.json()["code"] == "shutting_down"
        # A socket already open here is still served (its goodbye may be waiting on its next poll).
        open_one = httpx.get(
            f"{server.url}/socket.io/", params={"EIO": "4", "transport": "polling", "sid": "unknown"}
        )
        assert open_one.status_code == 400


async def test_a_conversation_moved_by_sigterm_goes_on_on_another_instance_with_every_line(
    tmp_path: Path,
) -> None:
    # Two instances on one database; the SDK reconnects with its page token wherever the balancer sends it.
    with ServerThread(create_simulator(SimulatorConfig(time_scale=0.02))) as simulator:
        settings = prepared_settings(tmp_path, simulator_url=simulator.url)
        ports = free_port(), free_port()
        first, second = (
            serve_process(tmp_path, port, AVATAR_BFF_SIMULATOR_URL=simulator.url) for port in ports
        )
        try:
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for url in urls:
                await asyncio.to_thread(wait_until_up, f"{url}/healthz", 30)
            html = httpx.get(f"{urls[0]}/a/demo").text
            config = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])
            conversation_id, token = config["session"]["id"], config["session"]["token"]
            before = Sdk("websocket")
            await before.connect(urls[0], token)
            await before.wait_for("showAgent")
            await before.client.emit("approvedPermissions", {})
            await before.wait_for("stvFinishedTalking")
            await before.client.emit("onTextEntered", {"isFinal": True, "text": "show me a table"})
            await before.wait_for("agentTurnToTalk")
            first.send_signal(signal.SIGTERM)
            await asyncio.wait_for(before.disconnected.wait(), GRACE_SECONDS)
            assert before.told_to_go

            after = Sdk("websocket")
            await after.connect(urls[1], token)
            await after.wait_for("showAgent")
            await after.client.emit("approvedPermissions", {})
            await after.wait_for("stvFinishedTalking")
            await after.client.emit("onTextEntered", {"isFinal": True, "text": "bye"})
            await after.wait_for("conversationEnded")
            await after.client.disconnect()
            assert await asyncio.to_thread(first.wait, GRACE_SECONDS + 10) == 0
        finally:
            for process in (first, second):
                stop_process(process)
        seen = before.said() + after.said()
        stored = [(entry.role, entry.text) for entry in await stored_transcript(settings, conversation_id)]
    # The first instance's lines (one it tapped but never delivered may sit among them), then the second's.
    assert [line for line in stored if line in seen] == seen
    assert stored[-len(after.said()) :] == after.said()
    async with db_session(settings) as session:
        status = await session.scalar(select(Conversation.status).where(Conversation.id == conversation_id))
    assert status == "ended"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_client_as_the_sdk_loads_it_hears_io_server_disconnect(
    tmp_path: Path, transport: str
) -> None:
    # The SDK reconnects on any reason but "io client disconnect"; socket.io-client itself does not reconnect
    # after "io server disconnect", so the SDK's reconnect is the only one.
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "socket.io-client").exists():
        pytest.skip("needs node and node_modules (make setup)")
    with ServerThread(create_simulator(SimulatorConfig(time_scale=0.02))) as simulator:
        prepared_settings(tmp_path, simulator_url=simulator.url)
        port = free_port()
        process = serve_process(tmp_path, port, AVATAR_BFF_SIMULATOR_URL=simulator.url)
        try:
            url = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_until_up, f"{url}/healthz", 30)
            html = httpx.get(f"{url}/a/demo").text
            token = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])["session"]["token"]
            client = await asyncio.create_subprocess_exec(
                node, str(GOODBYE_SCRIPT), url, token, transport, cwd=ROOT, stdout=asyncio.subprocess.PIPE
            )
            assert client.stdout is not None
            said = await asyncio.wait_for(client.stdout.readline(), 30)
            assert said == b"joined\n"
            process.send_signal(signal.SIGTERM)
            rest, _ = await asyncio.wait_for(client.communicate(), 20)
            assert await asyncio.to_thread(process.wait, GRACE_SECONDS + 10) == 0
        finally:
            process.kill()
            process.wait(timeout=10)
    assert rest.decode().splitlines() == ["disconnect io server disconnect"]
