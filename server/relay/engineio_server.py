"""python-engineio's server with a smaller per-socket packet queue (see `lean_queue`)."""

from __future__ import annotations

from typing import Any

import engineio

from server.relay.lean_queue import LeanQueue


class LeanEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    def create_queue(self, *args: Any, **kwargs: Any) -> LeanQueue[Any]:
        """Each browser socket's queue of packets to send: ~3 KB less per idle socket than asyncio.Queue."""
        return LeanQueue()
