"""Page views per client address: a token bucket per address (finding 12)."""

from __future__ import annotations

from server.errors import TooManyRequests
from server.security.rate_limit import KeyedTokenBuckets


class PageViewLimiter(KeyedTokenBuckets):
    """`rate` views per second per address with bursts of `burst`; remembers the `max_addresses` latest."""

    def __init__(self, rate: float, burst: int, max_addresses: int = 10_000) -> None:
        super().__init__(rate, burst, max_addresses)

    def check(self, address: str) -> None:
        """Take one token for `address`, or raise TooManyRequests saying when to come back."""
        wait = self.take(address)
        if wait:
            raise TooManyRequests(
                "too_many_page_views",
                f"Too many page views from your address; try again in {max(1, round(wait))} s.",
            )
