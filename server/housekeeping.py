"""Background upkeep: end idle sessions and purge what a flow's retention no longer allows."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from server.dependencies import Services
from server.models import utcnow
from server.transcripts.store import expire_and_purge

log = logging.getLogger("avatar_bff.housekeeping")


async def housekeeping_pass(services: Services) -> tuple[int, int]:
    idle = timedelta(seconds=services.settings.session_idle_seconds)
    async with services.sessions() as db:
        return await expire_and_purge(db, utcnow(), idle)


async def run_housekeeping(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.housekeeping_interval_seconds)
        try:
            ended, purged = await housekeeping_pass(services)
        except SQLAlchemyError:
            log.exception("housekeeping pass failed; retrying next interval")
            continue
        if ended or purged:
            log.info("housekeeping: %d idle session(s) ended, %d purged by retention", ended, purged)
