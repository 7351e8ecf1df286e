"""uvicorn's server with a drain step on SIGTERM, run by `avatar-bff serve`.

uvicorn alone stops accepting, then waits for open connections to close: a long-polling Socket.IO client
holds its request open until the grace period runs out, and a WebSocket is cut with code 1012, which
socket.io-client answers with a reconnect of its own besides the SDK's. Here the app is asked to drain first
(its listeners already closed): each browser hears a Socket.IO server disconnect, on which the SDK alone
reconnects, through the balancer to another instance, and the transcript tap and the timeline are written.
The whole stop stays within the grace period, plus at most one more for writing what is left.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import socket
import time
from typing import Any, Protocol

import uvicorn

log = logging.getLogger("avatar_bff.serving")
MAX_WRAPPERS = 8  # uvicorn's middleware around the app (proxy headers, message logger): a few at most


class Drains(Protocol):
    async def drain(self) -> None: ...


def drainable(app: Any) -> Drains | None:
    """The app under uvicorn's middleware (each keeps the next as `.app`), if it can drain."""
    for _ in range(MAX_WRAPPERS):
        if app is None:
            return None
        if inspect.iscoroutinefunction(getattr(app, "drain", None)):
            return app  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
    return None


class DrainingServer(uvicorn.Server):
    """On SIGTERM or Ctrl-C: close the listeners, drain the app, then uvicorn's own graceful shutdown."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = float(self.config.timeout_graceful_shutdown or 10)
        deadline = time.monotonic() + grace
        for server in self.servers:  # stop accepting first: new connections go to another instance
            server.close()
        app = drainable(self.config.loaded_app)
        if app is None:
            log.warning("shutdown: the app cannot drain; its sockets are cut instead")
        elif not self.force_exit:
            try:
                await asyncio.wait_for(app.drain(), grace)
            except TimeoutError:
                log.error("shutdown: draining took more than %s s; stopping anyway", grace)
        # What the drain used comes off uvicorn's wait for connections (at least a second of it).
        self.config.timeout_graceful_shutdown = max(1, math.ceil(deadline - time.monotonic()))
        try:
            # The app's own shutdown (the last writes) runs in here: bounded too, by one more grace period.
            await asyncio.wait_for(super().shutdown(sockets), self.config.timeout_graceful_shutdown + grace)
        except TimeoutError:
            log.error("shutdown: the application did not finish stopping in time; exiting")
