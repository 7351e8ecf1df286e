"""Token buckets by key (a client address, a conversation), in process, in a bounded table."""

from __future__ import annotations

import time
from collections import OrderedDict


class KeyedTokenBuckets:
    """`rate` tokens a second per key, up to `burst` saved up; remembers the `max_keys` latest keys.

    A key pushed out of the table comes back with a full bucket: the bound costs a little accuracy under a
    flood of keys, never memory.
    """

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, cost: int = 1) -> float:
        """Take `cost` tokens for `key`: 0 when taken, else the seconds until there would be enough."""
        now = time.monotonic()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if cost > tokens:
            self._buckets[key] = (tokens, now)
            return (min(cost, self.burst) - tokens) / self.rate
        self._buckets[key] = (tokens - cost, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # the least recently seen key
        return 0.0
