"""Page views per client address: a token bucket per address (finding 12), shared by the instances."""

from __future__ import annotations

from server.errors import TooManyRequests
from server.shared_state import SharedState


class PageViewLimiter:
    """`rate` views per second per address with bursts of `burst`."""

    def __init__(self, shared: SharedState, rate: float, burst: int) -> None:
        self.shared, self.rate, self.burst = shared, rate, float(burst)

    async def check(self, address: str) -> None:
        """Take one token for `address`, or raise TooManyRequests saying when to come back."""
        wait = await self.shared.take(f"page-views:{address}", rate=self.rate, burst=self.burst)
        if wait:
            raise TooManyRequests(
                "too_many_page_views",
                f"Too many page views from your address; try again in {max(1, round(wait))} s.",
            )
