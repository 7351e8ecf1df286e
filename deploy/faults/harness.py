"""What every fault script does: throwaway PostgreSQL and Redis, the cluster of `make cluster` on them, SDK-
protocol conversations, the fault once every conversation is under way, then the numbers.

A run fails (exit 1) when a line a page was told is stored is missing, or a conversation neither ended
nor reached its limit cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from deploy.cluster import Cluster, ClusterConfig, free_port
from deploy.conversations import Conversation, Outcome, stored_lines, talk, wait_until
from deploy.faults.services import ThrowawayPostgres, ThrowawayRedis

Fault = Callable[[Cluster, ThrowawayPostgres, ThrowawayRedis], None]
LOAD_SETTINGS = {  # one instance must be able to take every conversation; every visitor is 127.0.0.1
    "AVATAR_BFF_RELAY_MAX_PER_FLOW": "1000",
    "AVATAR_BFF_RELAY_MAX_TOTAL": "1000",
    "AVATAR_BFF_RELAY_MAX_PER_ADDRESS": "1000",  # every client here is 127.0.0.1
    "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "1000",
    "AVATAR_BFF_PAGE_VIEWS_BURST": "1000",
    "AVATAR_BFF_LOG_LEVEL": "warning",
}


def run(fault: Fault, conversations: int, delay: float, work_dir: Path) -> tuple[Outcome, int, float]:
    """The outcome, the acknowledged lines lost, and how long the fault itself took."""
    with ThrowawayPostgres() as postgres, ThrowawayRedis() as redis:
        config = ClusterConfig(
            listen=f"127.0.0.1:{free_port()}",
            database_url=postgres.url,
            redis_url=redis.url,
            data_dir=work_dir / "cluster",
            log_dir=work_dir / "logs",
            env=LOAD_SETTINGS,
            simulator_args=["--time-scale", "0.05", "--max-sessions", "1000"],
        )
        took: list[float] = []
        with Cluster(config) as cluster:

            async def during(running: list[Conversation]) -> None:
                await wait_until(
                    lambda: all(c.connects > 0 for c in running),
                    seconds=60,
                    what="every conversation connected",
                )
                await asyncio.sleep(delay)  # turns under way, lines being sent
                started = time.monotonic()
                await asyncio.to_thread(fault, cluster, postgres, redis)
                took.append(time.monotonic() - started)

            async def load() -> Outcome:
                return await talk(
                    cluster.url, conversations, think_seconds=1.0, replies=3, limit=120, during=during
                )

            outcome = asyncio.run(load())
            if not postgres_running(postgres):  # a fault that leaves it down: read what was stored anyway
                postgres.start()
            stored = asyncio.run(stored_lines(postgres.url, outcome))
    return outcome, stored.lost(outcome), took[0] if took else 0.0


def postgres_running(postgres: ThrowawayPostgres) -> bool:
    return (postgres.data / "postmaster.pid").exists()


def report(name: str, outcome: Outcome, lost: int, fault_seconds: float) -> bool:
    statuses = Counter(
        error.split(":")[0] if error.startswith("run") else error[:24]
        for c in outcome.conversations
        for error in c.errors
    )
    refused = Counter(c.refused for c in outcome.conversations if c.refused and not c.ended)
    in_time = sum(len(c.in_time()) for c in outcome.conversations)
    in_time_acked = sum(min(c.acknowledged, len(c.in_time())) for c in outcome.conversations)
    print(f"fault: {name} (took {fault_seconds:.1f} s)")
    print(f"  {outcome.summary()}")
    print(f"  acknowledged lines lost: {lost}")
    print(f"  lines sent in time acknowledged: {in_time_acked}/{in_time}")
    print(f"  client-side errors (retried): {dict(statuses) or 'none'}")
    if refused:
        print(f"  left refused: {dict(refused)}")
    return lost == 0


def main(name: str, fault: Fault, *, delay: float = 1.5) -> None:
    parser = argparse.ArgumentParser(description=name)
    parser.add_argument("--conversations", type=int, default=100, help="SDK-protocol conversations (100)")
    parser.add_argument("--logs", help="keep the cluster's logs in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avatar-bff-fault-") as work:
        outcome, lost, took = run(fault, args.conversations, delay, Path(args.logs or work))
        ok = report(name, outcome, lost, took)
    sys.exit(0 if ok else 1)
