"""Fault: the upstream (the simulator) stopped mid-run and started again on the same port.

Every relayed conversation loses its upstream: the browser is disconnected, the SDK reconnects, and the relay
opens a new upstream session (or refuses while it is down).
Run: python -m deploy.faults.upstream_restart [--conversations N]
"""

from __future__ import annotations

from deploy.cluster import Cluster
from deploy.faults.harness import main
from deploy.faults.services import ThrowawayPostgres, ThrowawayRedis

DOWN_SECONDS = 1.0


def restart_upstream(cluster: Cluster, _postgres: ThrowawayPostgres, _redis: ThrowawayRedis) -> None:
    cluster.restart_simulator(DOWN_SECONDS)


if __name__ == "__main__":
    main(f"upstream (simulator) down {DOWN_SECONDS:g} s mid-run", restart_upstream)
