"""The open-file limit `serve` runs under: every relayed session holds two sockets (browser and upstream)."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("avatar_bff")
RESERVED = 200  # descriptors kept for the database pool, log files, page and API requests
SOCKETS_PER_SESSION = 2


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (no privilege needed) and log how many relayed sessions
    fit; return that number. Distributions start services at a soft 1,024, about 400 sessions."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may refuse: run with what there is
            log.warning("open files: could not raise the limit from %d to %d (%s)", soft, target, exc)
    capacity = max(0, (soft - RESERVED) // SOCKETS_PER_SESSION)
    log.info(
        "open files: limit %d (hard %s): room for about %d relayed sessions; raise the hard limit "
        "(systemd LimitNOFILE=, ulimit -Hn) for more",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        capacity,
    )
    return capacity
