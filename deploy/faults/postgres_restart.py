"""Fault: PostgreSQL stopped (fast shutdown) for a few seconds mid-run, then started again.

Page ingest retries for a few seconds, then answers 503 and the page resends; nothing acknowledged is lost.
Run: python -m deploy.faults.postgres_restart [--conversations N]
"""

from __future__ import annotations

import time

from deploy.cluster import Cluster
from deploy.faults.harness import main
from deploy.faults.services import ThrowawayPostgres, ThrowawayRedis

DOWN_SECONDS = 3.0


def restart_postgres(_cluster: Cluster, postgres: ThrowawayPostgres, _redis: ThrowawayRedis) -> None:
    postgres.stop("fast")
    time.sleep(DOWN_SECONDS)
    postgres.start()


if __name__ == "__main__":
    main(f"PostgreSQL down {DOWN_SECONDS:g} s mid-run", restart_postgres)
