"""`SharedState` on Redis for several instances, and the in-process stand-in answering while Redis does not.

Every operation is one round trip, atomic on the server (a Lua script where it reads and writes), and takes
the time from Redis (`TIME`), so instances whose clocks differ still agree on refills and leases. Every key
carries a TTL: nothing stays once it no longer matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.settings import Settings
from server.shared_state import InProcessState, SharedState

T = TypeVar("T")
log = logging.getLogger("avatar_bff.shared_state")

DEFAULT_PREFIX = "avatar-bff:"
TIMEOUT_SECONDS = 0.5  # Redis answers in well under a millisecond: a caller never waits longer than this
PROBE_SECONDS = 2.0  # while Redis is away, asked again this often (callers meanwhile get the stand-in)
MAX_IN_FLIGHT = 64  # commands under way at once: the connection pool never grows past this
MAX_NAMESPACE = 32
# What "Redis does not answer" looks like: refused or reset connections, timeouts, a server error reply.
UNAVAILABLE = (RedisError, OSError, TimeoutError)

# A token bucket in a hash {tokens, at}; answers the wait in seconds as a string (a Lua number would be
# truncated to an integer). Forgotten once it would be full again anyway.
TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if cost > tokens then
  wait = (math.min(cost, burst) - tokens) / rate
else
  tokens = tokens - cost
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((burst - tokens) / rate * 1000) + 1000))
return string.format('%.17g', wait)
"""

# Slots in a sorted set, member -> lease end (ms, Redis's clock); lapsed leases are dropped first.
HOLD = """
local limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%d', now + lease), ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return 1
"""

HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""

# A counter whose TTL starts when it is created (later additions do not extend it).
ADD = """
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return total
"""


def redis_location(url: str) -> str:
    """host:port/db of a Redis URL, for logs: never its password."""
    try:
        parts = parse_url(url)
    except ValueError:
        return "(an invalid URL)"
    where = parts.get("path") or f"{parts.get('host', 'localhost')}:{parts.get('port', 6379)}"
    return f"{where}/{parts.get('db', 0)}"


class RedisState:
    """`SharedState` on one Redis server (or anything speaking its protocol). Raises when Redis does not
    answer: `FallbackState` is what callers get.

    Keys and slot members become keyed hashes before they reach Redis (`<prefix><namespace>:<hash>`): client
    addresses and emails never sit there in the clear, and whoever reads Redis cannot test guesses without
    the deployment's secret.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_secret: bytes,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.prefix = prefix
        self.location = redis_location(url)
        self._key_secret = key_secret
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # no retries: the stand-in answers at once instead
            decode_responses=True,
        )
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._take = self.client.register_script(TAKE)
        self._hold = self.client.register_script(HOLD)
        self._held = self.client.register_script(HELD)
        self._add = self.client.register_script(ADD)

    def key(self, key: str) -> str:
        namespace, sep, _ = key.partition(":")
        digest = self._digest(key)
        if sep and namespace and len(namespace) <= MAX_NAMESPACE:
            return f"{self.prefix}{namespace}:{digest}"
        return f"{self.prefix}{digest}"

    def _digest(self, value: str) -> str:
        return hmac.new(self._key_secret, value.encode(), hashlib.blake2b).hexdigest()[:32]

    async def _run(self, command: Callable[[], Awaitable[T]]) -> T:
        async with self._in_flight:
            return await command()

    async def ping(self) -> None:
        await self._run(lambda: self.client.ping())

    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1) -> float:
        wait = await self._run(lambda: self._take(keys=[self.key(key)], args=[rate, burst, cost]))
        return float(wait)

    async def hold(self, key: str, member: str, *, limit: int, lease_seconds: float) -> bool:
        lease_ms = max(1, math.ceil(lease_seconds * 1000))
        args: list[str | int] = [self._digest(member), limit, lease_ms]
        return bool(await self._run(lambda: self._hold(keys=[self.key(key)], args=args)))

    async def let_go(self, key: str, member: str) -> None:
        await self._run(lambda: self.client.zrem(self.key(key), self._digest(member)))

    async def held(self, key: str) -> int:
        return int(await self._run(lambda: self._held(keys=[self.key(key)])))

    async def add(self, key: str, amount: float, *, ttl_seconds: int) -> float:
        total = await self._run(lambda: self._add(keys=[self.key(key)], args=[amount, max(1, ttl_seconds)]))
        return float(total)

    async def total(self, key: str) -> float:
        value: Any = await self._run(lambda: self.client.get(self.key(key)))
        return 0.0 if value is None else float(value)

    async def once(self, key: str, *, ttl_seconds: int) -> bool:
        done: Any = await self._run(
            lambda: self.client.set(self.key(key), "1", nx=True, ex=max(1, ttl_seconds))
        )
        return bool(done)

    async def aclose(self) -> None:
        await self.client.aclose()


class FallbackState:
    """Redis while it answers, the in-process stand-in while it does not; never raises to its callers.

    Losing Redis logs one warning and then costs nothing per call: the stand-in answers at once while a
    background probe asks Redis again every `probe_seconds`; the first answer logs one info line and moves
    every call back. Meanwhile each instance limits on its own, as a single instance always does.
    """

    def __init__(
        self, redis: RedisState, stand_in: InProcessState, probe_seconds: float = PROBE_SECONDS
    ) -> None:
        self.redis, self.stand_in, self.probe_seconds = redis, stand_in, probe_seconds
        self.kind = redis.kind  # which backend answers now: "redis", or "process" while Redis is away
        self._probe: asyncio.Task[None] | None = None

    @property
    def redis_available(self) -> bool:
        return self.kind == self.redis.kind

    async def start(self) -> None:
        """Ask Redis once at startup, so an unreachable Redis is reported before the first caller."""
        try:
            await self.redis.ping()
        except UNAVAILABLE as exc:
            self._lost(exc)
        else:
            log.info("shared state on Redis at %s", self.redis.location)

    async def check(self) -> str:
        """Which backend answers now, asking Redis if it is thought to be there (for /readyz, so a Redis
        lost while nothing needed it is reported all the same)."""
        if self.redis_available:
            try:
                await self.redis.ping()
            except UNAVAILABLE as exc:
                self._lost(exc)
        return self.kind

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        await self.redis.aclose()

    def _lost(self, exc: BaseException) -> None:
        if not self.redis_available:
            return
        self.kind = self.stand_in.kind
        log.warning(
            "Redis at %s does not answer (%s): rate limits, slots, counters and one-time marks are kept in "
            "this instance alone until it does",
            self.redis.location,
            type(exc).__name__,
        )
        self._probe = asyncio.create_task(self._wait_for_redis(), name="shared-state-probe")

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self.probe_seconds)
            try:
                await self.redis.ping()
            except UNAVAILABLE:
                continue
            self.kind = self.redis.kind
            self._probe = None
            log.info("Redis at %s answers again: shared state is back on Redis", self.redis.location)
            return

    async def _call(self, operation: Callable[[SharedState], Awaitable[T]]) -> T:
        if self.redis_available:
            try:
                return await operation(self.redis)
            except UNAVAILABLE as exc:
                self._lost(exc)
        return await operation(self.stand_in)

    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1) -> float:
        return await self._call(lambda state: state.take(key, rate=rate, burst=burst, cost=cost))

    async def hold(self, key: str, member: str, *, limit: int, lease_seconds: float) -> bool:
        return await self._call(
            lambda state: state.hold(key, member, limit=limit, lease_seconds=lease_seconds)
        )

    async def let_go(self, key: str, member: str) -> None:
        await self._call(lambda state: state.let_go(key, member))

    async def held(self, key: str) -> int:
        return await self._call(lambda state: state.held(key))

    async def add(self, key: str, amount: float, *, ttl_seconds: int) -> float:
        return await self._call(lambda state: state.add(key, amount, ttl_seconds=ttl_seconds))

    async def total(self, key: str) -> float:
        return await self._call(lambda state: state.total(key))

    async def once(self, key: str, *, ttl_seconds: int) -> bool:
        return await self._call(lambda state: state.once(key, ttl_seconds=ttl_seconds))


def shared_state_for(settings: Settings) -> InProcessState | FallbackState:
    """In process without AVATAR_BFF_REDIS_URL (one instance, as ever); else Redis, with the stand-in."""
    if not settings.redis_url:
        return InProcessState()
    # Keyed by the deployment's secret, which every instance shares already (it verifies their tokens).
    key_secret = hmac.new(settings.secret, b"shared state keys", hashlib.sha256).digest()
    redis = RedisState(settings.redis_url, key_secret=key_secret, prefix=settings.redis_key_prefix)
    return FallbackState(redis, InProcessState())
