"""Redis for tests: the configured server (AVATAR_BFF_REDIS_URL) under a prefix of the test's own, or a
`redis-server` of the test's own on a free port, to stop and start again."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.support import eventually, free_port

REDIS_URL = os.environ.get("AVATAR_BFF_REDIS_URL", "")
# Prefixes of the tests' keys: every one starts with this, so a shared Redis shows whose keys they are.
TEST_PREFIX = os.environ.get("AVATAR_BFF_TEST_REDIS_PREFIX", "t-redis:")

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs AVATAR_BFF_REDIS_URL (a Redis server)")
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs the redis-server binary (Debian package redis-server)"
)


def fresh_prefix() -> str:
    return f"{TEST_PREFIX}{uuid.uuid4().hex[:8]}:"


def redis_keys(url: str, prefix: str) -> dict[str, int]:
    """The keys under `prefix`, each with its TTL in milliseconds (-1: none)."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return {key: int(client.pttl(key)) for key in client.scan_iter(match=f"{prefix}*", count=1000)}


def forget_prefix(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (only those: other tests and helpers share the server)."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@contextmanager
def configured_redis() -> Iterator[tuple[str, str]]:
    """(url, prefix) on the configured Redis, the prefix's keys deleted afterwards."""
    prefix = fresh_prefix()
    try:
        yield REDIS_URL, prefix
    finally:
        forget_prefix(REDIS_URL, prefix)


class RedisServer:
    """A `redis-server` of the test's own on a loopback port, keeping nothing on disk; `stop()` kills it
    (SIGKILL, as a crash would), `start()` brings it back on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(self._answers, what=f"redis-server on port {self.port} answering")

    def _answers(self) -> bool:
        with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
            return bool(client.ping())

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
