"""The console's landing page: is each avatar used, and is it working."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from server.admin.console import ConsoleDep
from server.security.headers import ADMIN_PREFIX

router = APIRouter()


@router.get(ADMIN_PREFIX, response_class=HTMLResponse)
async def overview(console: ConsoleDep) -> HTMLResponse:
    return console.render("overview.html", section="overview")
