"""The console's landing page: is each avatar used, and is it working."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from server.admin.console import ConsoleDep
from server.conversations import statistics, timeline
from server.security.headers import ADMIN_PREFIX

router = APIRouter()
PROBLEMS = 20
ENDINGS = [*timeline.END_CATEGORIES.items(), (statistics.ACTIVE, "Still active"), (statistics.OTHER, "Other")]


@router.get(ADMIN_PREFIX, response_class=HTMLResponse)
async def overview(console: ConsoleDep) -> HTMLResponse:
    usage = await statistics.usage(console.db, datetime.now(UTC).date())
    problems = await timeline.latest_problems(console.db, PROBLEMS)
    # What the charts draw: the same numbers as the tables beside them.
    chart: dict[str, Any] = {
        "days": [day.isoformat() for day in usage.days],
        "flows": [
            {"slug": f.slug, "conversations": f.conversations, "minutes": f.minutes} for f in usage.flows
        ],
    }
    return console.render(
        "overview.html",
        section="overview",
        usage=usage,
        chart=chart,
        endings=ENDINGS,
        problems=problems,
    )
