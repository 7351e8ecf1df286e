"""Fault: one instance SIGKILLed mid-run (by the pid in data/cluster/instance-1.pid).

Its conversations reconnect through nginx to the other instance, which re-opens their upstream.
Run: python -m deploy.faults.instance_kill [--conversations N]
"""

from __future__ import annotations

from deploy.cluster import Cluster
from deploy.faults.harness import main
from deploy.faults.services import ThrowawayPostgres, ThrowawayRedis


def kill_instance(cluster: Cluster, _postgres: ThrowawayPostgres, _redis: ThrowawayRedis) -> None:
    cluster.kill_instance(1)


if __name__ == "__main__":
    main("instance 1 SIGKILLed mid-run", kill_instance)
