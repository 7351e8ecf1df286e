"""Page views per client address: a token bucket per address, in process, with a bounded table."""

from __future__ import annotations

import time
from collections import OrderedDict

from server.errors import TooManyRequests


class PageViewLimiter:
    """`rate` views per second per address with bursts of `burst`; remembers the `max_addresses` latest.

    An address pushed out of the table comes back with a full bucket: the bound costs a little accuracy
    under a flood of addresses, never memory.
    """

    def __init__(self, rate: float, burst: int, max_addresses: int = 10_000) -> None:
        self.rate, self.burst, self.max_addresses = rate, float(burst), max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address → (tokens, at)

    def check(self, address: str) -> None:
        """Take one token for `address`, or raise TooManyRequests saying when to come back."""
        now = time.monotonic()
        tokens, at = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            wait = (1 - tokens) / self.rate
            raise TooManyRequests(
                "too_many_page_views",
                f"Too many page views from your address; try again in {max(1, round(wait))} s.",
            )
        self._buckets[address] = (tokens - 1, now)
        if len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)  # the least recently seen address
