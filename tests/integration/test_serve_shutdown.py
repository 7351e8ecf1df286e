"""`avatar-bff serve` stops within a bounded time after SIGTERM, whatever its clients are doing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import free_port, wait_until_up

SCRIPT = [sys.executable, "-c", "from server.cli import main; main()"]
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
