"""Fault: Redis stopped mid-run, and left stopped.

The instances must carry on as single instances (with a warning), never crash; conversations go on.
Run: python -m deploy.faults.redis_stop [--conversations N]
"""

from __future__ import annotations

from deploy.cluster import Cluster
from deploy.faults.harness import main
from deploy.faults.services import ThrowawayPostgres, ThrowawayRedis


def stop_redis(cluster: Cluster, _postgres: ThrowawayPostgres, redis: ThrowawayRedis) -> None:
    redis.stop()
    if not all(instance.running() for instance in cluster.instances):
        raise RuntimeError("an instance stopped with Redis")


if __name__ == "__main__":
    main("Redis stopped mid-run", stop_redis)
