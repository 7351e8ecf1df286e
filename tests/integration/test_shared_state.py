"""SharedState behaves alike on every backend: in process always, on Redis when AVATAR_BFF_REDIS_URL is set.

On Redis each test talks through two clients, as two instances would; in process both are the one table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.redis_state import RedisState, redis_location
from server.settings import SettingsError
from server.shared_state import InProcessState, SharedState
from tests.redis_support import configured_redis, needs_redis, redis_keys
from tests.support import eventually_async, make_settings

KEY_SECRET = b"k" * 32
Instances = tuple[SharedState, SharedState]


@pytest.fixture(params=["process", pytest.param("redis", marks=needs_redis)])
async def instances(request: pytest.FixtureRequest) -> AsyncIterator[Instances]:
    if request.param == "process":
        state = InProcessState()
        yield state, state
        return
    with configured_redis() as (url, prefix):
        one = RedisState(url, key_secret=KEY_SECRET, prefix=prefix)
        other = RedisState(url, key_secret=KEY_SECRET, prefix=prefix)
        try:
            yield one, other
        finally:
            await one.aclose()
            await other.aclose()


async def test_a_bucket_gives_its_burst_then_says_how_long_to_wait_and_refills(instances: Instances) -> None:
    one, other = instances
    assert await one.take("views:10.0.0.1", rate=20, burst=3) == 0
    assert await other.take("views:10.0.0.1", rate=20, burst=3) == 0
    assert await one.take("views:10.0.0.1", rate=20, burst=3) == 0
    wait = await other.take("views:10.0.0.1", rate=20, burst=3)
    assert 0 < wait <= 0.05 + 0.01  # one token comes back every 50 ms
    assert await one.take("views:10.0.0.2", rate=20, burst=3) == 0  # another key, its own bucket
    await eventually_async(lambda: one.take("views:10.0.0.1", rate=20, burst=3), lambda wait: wait == 0)
    # A cost larger than what is saved up waits for the difference; nothing is taken meanwhile.
    assert await other.take("lines:c1", rate=1, burst=10, cost=8) == 0
    assert await one.take("lines:c1", rate=1, burst=10, cost=5) == pytest.approx(3, abs=0.2)
    assert await other.take("lines:c1", rate=1, burst=10, cost=2) == 0


async def test_a_burst_taken_at_once_gives_exactly_the_burst(instances: Instances) -> None:
    one, other = instances
    waits = await asyncio.gather(
        *(state.take("sign-in:ops", rate=0.001, burst=10) for _ in range(25) for state in (one, other))
    )
    assert sum(1 for wait in waits if wait == 0) == 10


async def test_slots_are_limited_leased_renewed_and_given_back(instances: Instances) -> None:
    one, other = instances
    assert await one.hold("live:flow-a", "c1", limit=2, lease_seconds=30)
    assert await other.hold("live:flow-a", "c2", limit=2, lease_seconds=30)
    assert not await one.hold("live:flow-a", "c3", limit=2, lease_seconds=30)  # both held
    assert await other.hold("live:flow-a", "c1", limit=2, lease_seconds=30)  # a holder renews at the limit
    assert await one.held("live:flow-a") == 2
    await other.let_go("live:flow-a", "c1")
    await other.let_go("live:flow-a", "c9")  # held nothing: nothing happens
    assert await one.held("live:flow-a") == 1
    assert await one.hold("live:flow-a", "c3", limit=2, lease_seconds=30)
    assert await one.held("live:flow-b") == 0

    # A lease not renewed lapses (its instance died); one renewed in time does not.
    assert await one.hold("live:flow-c", "dies", limit=2, lease_seconds=1.5)
    assert await one.hold("live:flow-c", "lives", limit=2, lease_seconds=1.5)
    await asyncio.sleep(0.9)
    assert await other.hold("live:flow-c", "lives", limit=2, lease_seconds=30)  # renewed, for longer
    await eventually_async(lambda: one.held("live:flow-c"), lambda held: held == 1, timeout=5)
    assert await other.hold("live:flow-c", "new", limit=2, lease_seconds=1.5)  # the lapsed slot is free
    assert not await other.hold("live:flow-c", "more", limit=2, lease_seconds=1.5)  # "lives" still holds


async def test_in_process_slot_keys_whose_leases_all_lapsed_unread_are_forgotten() -> None:
    """A slot per client address whose page closed without a word is never read again: a stream of new
    addresses must not grow the table for good (Redis forgets such keys by their TTL)."""
    state = InProcessState()
    for n in range(3000):
        assert await state.hold(
            f"budget:per-address:10.0.{n // 256}.{n % 256}", "c", limit=1, lease_seconds=0.2
        )
    await asyncio.sleep(0.3)
    for n in range(3000):
        assert await state.hold(
            f"budget:per-address:10.1.{n // 256}.{n % 256}", "c", limit=1, lease_seconds=60
        )
    assert len(state._slots) <= 3000  # the lapsed thousands went; every live one is kept
    assert await state.held("budget:per-address:10.1.11.183") == 1


async def test_a_counter_adds_up_and_is_forgotten_its_ttl_after_it_was_created(instances: Instances) -> None:
    one, other = instances
    started = time.monotonic()
    assert await one.add("minutes:flow-a:day", 1.5, ttl_seconds=2) == 1.5
    assert await other.add("minutes:flow-a:day", 2, ttl_seconds=2) == 3.5
    assert await one.add("minutes:flow-b:day", 1, ttl_seconds=2) == 1
    # Adding does not push the end back: the counter starts again at 0 about 2 s after it was created.
    total = 3.5
    while total > 0.75:
        await asyncio.sleep(0.25)
        total = await other.add("minutes:flow-a:day", 0.25, ttl_seconds=2)
        assert time.monotonic() - started < 5, "the counter was never forgotten"
    assert time.monotonic() - started >= 1.9
    assert total == 0.25


async def test_reading_a_counter_creates_nothing(instances: Instances) -> None:
    one, other = instances
    assert await one.total("joined:never") == 0
    assert await other.add("joined:once", 1, ttl_seconds=60) == 1
    assert await one.total("joined:once") == 1
    if isinstance(one, RedisState):  # a flood of reads must leave no keys behind
        assert not await one.client.exists(one.key("joined:never"))
    else:
        assert isinstance(one, InProcessState) and "joined:never" not in one._counters


async def test_once_is_true_only_the_first_time_until_its_mark_expires(instances: Instances) -> None:
    one, other = instances
    assert await one.once("used:abc", ttl_seconds=1)
    assert not await other.once("used:abc", ttl_seconds=1)
    assert not await one.once("used:abc", ttl_seconds=1)
    assert await other.once("used:abd", ttl_seconds=1)
    await eventually_async(lambda: one.once("used:abc", ttl_seconds=60), timeout=5)
    assert not await other.once("used:abc", ttl_seconds=60)


async def test_a_mark_taken_by_many_at_once_is_taken_once(instances: Instances) -> None:
    one, other = instances
    firsts = await asyncio.gather(*(state.once("used:race", ttl_seconds=60) for state in (one, other) * 20))
    assert firsts.count(True) == 1


@needs_redis
async def test_on_redis_every_key_expires_and_carries_no_address_or_email_in_the_clear() -> None:
    with configured_redis() as (url, prefix):
        state = RedisState(url, key_secret=KEY_SECRET, prefix=prefix)
        try:
            await state.take("sign-in-account:ops@example.com", rate=1 / 60, burst=5)
            await state.take("page-views:192.0.2.7", rate=10, burst=100)
            await state.hold("live:flow-a", "198.51.100.1", limit=5, lease_seconds=30)
            await state.add("minutes:flow-a", 1, ttl_seconds=86_400)
            await state.once("used:token", ttl_seconds=60)
        finally:
            await state.aclose()
        keys = redis_keys(url, prefix)
    assert len(keys) == 5
    assert all(0 < ttl <= 86_400_000 for ttl in keys.values()), keys
    assert {key.removeprefix(prefix).split(":")[0] for key in keys} == {
        "sign-in-account",
        "page-views",
        "live",
        "minutes",
        "used",
    }
    assert not any("example.com" in key or "192.0.2" in key for key in keys)
    # The sign-in bucket lasts until it would be full again (5 tokens at one a minute), no longer.
    sign_in = next(ttl for key, ttl in keys.items() if "sign-in-account" in key)
    assert 60_000 <= sign_in <= 5 * 60_000 + 1000


@needs_redis
async def test_instances_agree_only_when_they_share_the_prefix_and_the_secret() -> None:
    with configured_redis() as (url, prefix):
        one = RedisState(url, key_secret=KEY_SECRET, prefix=prefix)
        elsewhere = RedisState(url, key_secret=KEY_SECRET, prefix=f"{prefix}other:")
        try:
            assert await one.once("used:x", ttl_seconds=60)
            assert await elsewhere.once("used:x", ttl_seconds=60)  # another deployment on the same Redis
        finally:
            await one.aclose()
            await elsewhere.aclose()


def test_logs_name_where_redis_is_but_never_its_password() -> None:
    assert redis_location("redis://:hunter2@cache.internal:6380/3") == "cache.internal:6380/3"
    assert redis_location("redis://user:hunter2@cache.internal") == "cache.internal:6379/0"
    assert redis_location("unix:///run/redis.sock?db=2") == "/run/redis.sock/2"


def test_a_redis_url_of_another_kind_stops_the_server_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AVATAR_BFF_REDIS_URL"):
        make_settings(tmp_path, redis_url="http://cache.internal:6379")
