"""The per-address limit on page views (finding 12), on its own: buckets apart, table bounded."""

from __future__ import annotations

import pytest

from server.errors import TooManyRequests
from server.pages.rate_limit import PageViewLimiter
from server.shared_state import InProcessState


async def test_each_address_has_its_own_bucket_and_the_table_is_bounded() -> None:
    shared = InProcessState(max_keys=3)
    limiter = PageViewLimiter(shared, rate=0.001, burst=2)
    await limiter.check("10.0.0.1")
    await limiter.check("10.0.0.1")
    with pytest.raises(TooManyRequests, match="Too many page views"):
        await limiter.check("10.0.0.1")
    await limiter.check("10.0.0.2")  # another address is not held back by the first
    for n in range(3, 10):
        await limiter.check(f"10.0.0.{n}")
    assert len(shared._buckets) == 3
    await limiter.check("10.0.0.1")  # pushed out of the table: back with a full bucket
