"""Limits the instances share through Redis: real app servers on loopback, a real Redis (and one killed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.redis_state import FallbackState
from server.settings import Settings
from tests.admin.console_client import PASSWORD, ConsoleClient, create_admin
from tests.redis_support import (
    RedisServer,
    configured_redis,
    fresh_prefix,
    needs_redis,
    needs_redis_server,
    redis_keys,
)
from tests.support import ServerThread, eventually, prepared_settings

PAGE = "/a/demo"


def instance_settings(data_dir: Path, url: str, prefix: str, **overrides: object) -> Settings:
    return prepared_settings(data_dir, redis_url=url, redis_key_prefix=prefix, **overrides)


@pytest.fixture
def two_instances(tmp_path: Path) -> Iterator[tuple[ServerThread, ServerThread, tuple[Settings, Settings]]]:
    """Two app servers on one Redis (their own databases: page views and sign-in need nothing shared)."""
    limits = {
        "page_views_per_second": 0.01,
        "page_views_burst": 4,
        "sign_in_attempts_per_account": 3,
        "sign_in_attempts_per_address": 50,
    }
    with configured_redis() as (url, prefix):
        one = instance_settings(tmp_path / "one", url, prefix, **limits)
        other = instance_settings(tmp_path / "other", url, prefix, **limits)
        with ServerThread(create_app(one)) as first, ServerThread(create_app(other)) as second:
            yield first, second, (one, other)


def views(server: ServerThread, count: int) -> list[int]:
    return [httpx.get(f"{server.url}{PAGE}").status_code for _ in range(count)]


@needs_redis
def test_page_views_from_one_address_share_one_limit_across_instances(
    two_instances: tuple[ServerThread, ServerThread, tuple[Settings, Settings]],
) -> None:
    first, second, _ = two_instances
    for server in (first, second):
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["status"] == "ready" and ready["shared_state"] == "redis"
    assert views(first, 2) + views(second, 2) == [200] * 4  # the burst of 4, spent on both
    refused = httpx.get(f"{second.url}{PAGE}", headers={"accept": "application/json"})
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_page_views"
    assert views(first, 1) == [429]  # the other instance knows too


@needs_redis
def test_taking_turns_between_instances_buys_no_extra_sign_in_attempts(
    two_instances: tuple[ServerThread, ServerThread, tuple[Settings, Settings]],
) -> None:
    first, second, settings = two_instances
    for each in settings:
        create_admin(each, "ops@example.com")
    with ConsoleClient(first.url) as on_first, ConsoleClient(second.url) as on_second:
        answers = [
            client.sign_in("ops@example.com", f"guess {n}").status_code
            for n, client in enumerate((on_first, on_second, on_first, on_second, on_first))
        ]
        assert answers == [401, 401, 401, 429, 429]  # 3 attempts per account in all, not 3 per instance
        assert on_second.sign_in("ops@example.com", PASSWORD).status_code == 429  # the right one waits too


class Records(logging.Handler):
    """What the shared-state logger said (the app's own log setup may keep it from the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int, saying: str = "") -> list[str]:
        messages = [record.getMessage() for record in self.records if record.levelno == level]
        return [message for message in messages if saying in message]


@pytest.fixture
def shared_state_log() -> Iterator[Records]:
    logger = logging.getLogger("avatar_bff.shared_state")
    records, level = Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


@needs_redis_server
def test_losing_redis_mid_run_falls_back_to_limits_in_process_and_comes_back(
    tmp_path: Path, shared_state_log: Records
) -> None:
    prefix = fresh_prefix()
    with RedisServer(tmp_path) as redis_server:
        settings = instance_settings(
            tmp_path / "app", redis_server.url, prefix, page_views_per_second=0.01, page_views_burst=3
        )
        app = create_app(settings)
        shared = app.state.shared
        assert isinstance(shared, FallbackState)
        location = f"127.0.0.1:{redis_server.port}/0"  # where, never a password
        with ServerThread(app) as server:

            def ready() -> dict[str, object]:
                answer: dict[str, object] = httpx.get(f"{server.url}/readyz").json()
                return answer

            assert ready()["shared_state"] == "redis"
            assert views(server, 4) == [200, 200, 200, 429]
            assert len(redis_keys(redis_server.url, prefix)) == 1

            redis_server.stop()  # as a crash would: no goodbye
            answer = ready()  # the readiness probe notices, even before a limit needs Redis
            assert answer["status"] == "ready" and answer["shared_state"] == "process"
            assert len(shared_state_log.at(logging.WARNING)) == 1
            # The app keeps serving, and still limits: the instance's own buckets start full.
            assert views(server, 5) == [200, 200, 200, 429, 429]
            assert ready()["shared_state"] == "process"
            assert len(shared_state_log.at(logging.WARNING)) == 1
            assert "does not answer" in shared_state_log.at(logging.WARNING)[0]
            assert shared_state_log.at(logging.INFO) == [f"shared state on Redis at {location}"]

            redis_server.start()  # the same port, empty
            eventually(ready, lambda answer: answer["shared_state"] == "redis", what="the switch back")
            assert len(shared_state_log.at(logging.INFO, "answers again")) == 1
            assert views(server, 4) == [200, 200, 200, 429]  # Redis's fresh bucket, not the spent one
            assert len(redis_keys(redis_server.url, prefix)) == 1
            assert len(shared_state_log.at(logging.WARNING)) == 1


@needs_redis_server
def test_an_instance_whose_redis_never_answers_starts_and_serves_on_its_own(
    tmp_path: Path, shared_state_log: Records
) -> None:
    nowhere = RedisServer(tmp_path)  # a free port nobody listens on
    settings = instance_settings(
        tmp_path / "app", nowhere.url, fresh_prefix(), page_views_per_second=0.01, page_views_burst=2
    )
    with ServerThread(create_app(settings)) as server:
        assert httpx.get(f"{server.url}/readyz").json()["shared_state"] == "process"
        assert views(server, 3) == [200, 200, 429]
    warnings = shared_state_log.at(logging.WARNING)
    assert len(warnings) == 1 and f"127.0.0.1:{nowhere.port}/0" in warnings[0]


def test_without_a_redis_url_the_instance_keeps_its_state_in_process(live_server: ServerThread) -> None:
    assert httpx.get(f"{live_server.url}/readyz").json()["shared_state"] == "process"
