"""Background upkeep: end idle conversations and purge what a flow's retention no longer allows."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from server import admins
from server.conversations import lifecycle, timeline
from server.db import Database
from server.models import utcnow

log = logging.getLogger("avatar_bff.housekeeping")


async def housekeeping_pass(
    db: Database,
    idle_after: timedelta,
    token_lifetime: timedelta,
    console_sessions: tuple[timedelta, timedelta] | None = None,
) -> tuple[int, int]:
    """One pass: (conversations ended for idleness, conversations purged by retention).

    Erased ids older than a page token's lifetime are forgotten too: no token naming them is valid any more;
    so are admin console sessions past their (idle, absolute) limits.
    """
    now = utcnow()
    ended = await lifecycle.expire_idle(db, now, idle_after)
    purged = await lifecycle.purge_by_retention(db, now)
    await lifecycle.forget_erased(db, now, token_lifetime)
    await timeline.forget_unstarted(db, now - timeline.UNSTARTED_KEPT)
    if console_sessions is not None:
        await admins.purge_sessions(db, *console_sessions)
    return ended, purged


async def run_housekeeping(
    db: Database,
    idle_after: timedelta,
    token_lifetime: timedelta,
    interval_seconds: float,
    console_sessions: tuple[timedelta, timedelta],
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            ended, purged = await housekeeping_pass(db, idle_after, token_lifetime, console_sessions)
        except SQLAlchemyError as exc:
            log.error("housekeeping pass failed (%s); retrying next interval", type(exc).__name__)
            continue
        if ended or purged:
            log.info("housekeeping: %d idle conversation(s) ended, %d purged by retention", ended, purged)
