"""Reaching every instance's browsers: python-socketio's Redis manager, and the relay's own control messages.

With `AVATAR_BFF_REDIS_URL` set, the browser-facing server uses `AsyncRedisManager`, so an emit or a
disconnect addressed to a browser session on another instance gets there. The relay's control messages
("end these conversations") ride the same channel as emits of a name no browser event can have; every
instance, this one included, handles them for the bridges it holds. Redis down: python-socketio logs, retries
and delivers locally only; this instance says so once and goes on serving its own browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import socketio

log = logging.getLogger("avatar_bff.relay")
CONTROL_EVENT = "\0relay-control"  # an emit of this name is handled by the relay, never sent to a browser
CONTROL_ROOM = "\0relay-control"  # a room no browser is in
REDIS_CONNECT_TIMEOUT = 2.0

Handler = Callable[[dict[str, Any]], Awaitable[None]]


def channel_for(redis_url: str, prefix: str) -> str:
    """Pub/sub channels belong to no database: the key prefix and the database number keep deployments
    sharing one Redis server apart."""
    database = urlsplit(redis_url).path.strip("/") or "0"
    return f"{prefix}relay:{database}"


class RelayRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """`AsyncRedisManager` that hands the relay's control messages to the relay, and warns once when Redis
    cannot be reached (python-socketio then delivers locally only)."""

    def __init__(self, redis_url: str, prefix: str, handler: Handler) -> None:
        super().__init__(
            redis_url,
            channel=channel_for(redis_url, prefix),
            redis_options={"socket_connect_timeout": REDIS_CONNECT_TIMEOUT},
        )
        self._handler = handler
        self.reachable = True

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("event") == CONTROL_EVENT:
            data = message.get("data")
            payload = data[0] if isinstance(data, list) and data else data
            if isinstance(payload, dict):
                await self._handler(payload)
            return
        await super()._handle_emit(message)

    async def _publish(self, data: Any) -> Any:
        result = await super()._publish(data)
        if result is None and self.reachable:  # python-socketio gave up after its retry
            self.reachable = False
            log.warning(
                "relay: Redis cannot be reached: this instance reaches only its own browsers until it is back"
            )
        elif result is not None and not self.reachable:
            self.reachable = True
            log.warning("relay: Redis is reachable again")
        return result


def client_manager(redis_url: str, prefix: str, handler: Handler) -> socketio.AsyncManager:
    return RelayRedisManager(redis_url, prefix, handler) if redis_url else socketio.AsyncManager()


async def broadcast(manager: socketio.AsyncManager, handler: Handler, payload: dict[str, Any]) -> None:
    """Handle `payload` here and on every other instance sharing the manager's Redis."""
    if isinstance(manager, RelayRedisManager):
        await manager.emit(CONTROL_EVENT, payload, namespace="/", room=CONTROL_ROOM)
    else:
        await handler(payload)


async def close(manager: socketio.AsyncManager) -> None:
    """Stop listening and close the Redis connections (python-socketio leaves both to the process's end)."""
    if not isinstance(manager, RelayRedisManager):
        return
    listener = getattr(manager, "thread", None)
    if isinstance(listener, asyncio.Task):
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener
    for connection in (manager.pubsub, manager.redis):
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.aclose()


async def check_redis(manager: socketio.AsyncManager) -> None:
    """At start: say plainly when Redis is configured but down (the server starts anyway)."""
    if not isinstance(manager, RelayRedisManager):
        return
    import redis.asyncio as aioredis  # python-socketio's own Redis client

    client = aioredis.Redis.from_url(manager.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT)
    try:
        async with asyncio.timeout(REDIS_CONNECT_TIMEOUT * 2):
            await client.ping()
    except Exception as exc:  # any failure means the same to an operator
        manager.reachable = False
        log.warning(
            "relay: Redis cannot be reached (%s): this instance serves only its own browsers until it is"
            " back",
            type(exc).__name__,
        )
    finally:
        await client.aclose()
