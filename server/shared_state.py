"""State the instances of one deployment share: rate buckets, held slots, counters and one-time marks.

One instance keeps it in process (`InProcessState`); several share it through Redis (`AVATAR_BFF_REDIS_URL`).
Both answer the same questions the same way, so callers never ask which one they have.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

SWEEP_MIN_KEYS = 1024


class SharedState(Protocol):
    """What every backend offers. Keys are short strings the caller namespaces (`"views:<address>"`)."""

    kind: str  # "process" or "redis", for logs and /readyz

    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1) -> float:
        """Take `cost` tokens from `key`'s bucket (`rate` a second, `burst` at most): 0 when taken, else the
        seconds until there would be enough."""
        ...

    async def hold(self, key: str, member: str, *, limit: int, lease_seconds: float) -> bool:
        """Hold (or renew) `member`'s slot among at most `limit` under `key`; False when all are held.

        A slot not renewed within `lease_seconds` is free again, so an instance that dies gives its back.
        """
        ...

    async def let_go(self, key: str, member: str) -> None:
        """Give `member`'s slot under `key` back (nothing if it held none)."""
        ...

    async def held(self, key: str) -> int:
        """How many slots under `key` are held now."""
        ...

    async def add(self, key: str, amount: float, *, ttl_seconds: int) -> float:
        """Add to the counter `key` (created at 0, forgotten `ttl_seconds` after it was created); the new
        total."""
        ...

    async def total(self, key: str) -> float:
        """The counter `key`'s total (0 when there is none), without creating it."""
        ...

    async def once(self, key: str, *, ttl_seconds: int) -> bool:
        """True the first time `key` is marked within `ttl_seconds`, False after."""
        ...


class InProcessState:
    """`SharedState` for a single instance: bounded tables in memory, nothing shared."""

    kind = "process"

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._slots: dict[str, dict[str, float]] = {}  # key -> member -> lease end
        self._sweep_at = SWEEP_MIN_KEYS  # past this many slot keys, those with only lapsed leases go
        self._counters: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (total, expires)
        self._marks: OrderedDict[str, float] = OrderedDict()  # key -> expires

    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1) -> float:
        now = time.monotonic()
        tokens, at = self._buckets.pop(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if cost > tokens:
            self._buckets[key] = (tokens, now)
            return (min(cost, burst) - tokens) / rate
        self._buckets[key] = (tokens - cost, now)
        _bound(self._buckets, self.max_keys)
        return 0.0

    async def hold(self, key: str, member: str, *, limit: int, lease_seconds: float) -> bool:
        # Lapsed leases are cleared only when they stand in the way: a renewal costs O(1) however many
        # slots a key has (the relay renews every bridge's slots at each budget check).
        now = time.monotonic()
        slots = self._slots.setdefault(key, {})
        if slots.get(member, now) <= now and len(slots) >= limit:  # a new or lapsed member, no room in sight
            for lapsed in [m for m, end in slots.items() if end <= now]:
                del slots[lapsed]
            if len(slots) >= limit:
                if not slots:
                    del self._slots[key]
                return False
        slots[member] = now + lease_seconds
        if len(self._slots) > self._sweep_at:
            self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        """Forget keys whose leases all lapsed unread (a slot per client address, say, whose page closed
        without a word): a sweep each time the keys double, so each hold pays a constant share."""
        for key in [k for k, slots in self._slots.items() if max(slots.values(), default=now) <= now]:
            del self._slots[key]
        self._sweep_at = max(SWEEP_MIN_KEYS, 2 * len(self._slots))

    async def let_go(self, key: str, member: str) -> None:
        slots = self._slots.get(key)
        if slots is not None:
            slots.pop(member, None)
            if not slots:
                del self._slots[key]

    async def held(self, key: str) -> int:
        now = time.monotonic()
        return sum(1 for end in self._slots.get(key, {}).values() if end > now)

    async def add(self, key: str, amount: float, *, ttl_seconds: int) -> float:
        now = time.monotonic()
        total, expires = self._counters.pop(key, (0.0, now + ttl_seconds))
        if expires <= now:
            total, expires = 0.0, now + ttl_seconds
        self._counters[key] = (total + amount, expires)
        _bound(self._counters, self.max_keys)
        return total + amount

    async def total(self, key: str) -> float:
        total, expires = self._counters.get(key, (0.0, 0.0))
        return total if expires > time.monotonic() else 0.0

    async def once(self, key: str, *, ttl_seconds: int) -> bool:
        now = time.monotonic()
        expires = self._marks.get(key)
        if expires is not None and expires > now:
            return False
        self._marks.pop(key, None)
        self._marks[key] = now + ttl_seconds
        _bound(self._marks, self.max_keys)
        return True


def _bound(table: OrderedDict[str, tuple[float, float]] | OrderedDict[str, float], max_keys: int) -> None:
    """Forget the oldest keys past `max_keys`: a flood of keys costs accuracy, never memory."""
    while len(table) > max_keys:
        table.popitem(last=False)
