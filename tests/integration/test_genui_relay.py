"""GenUI HTML from the avatar service reaches the page sanitised, through the real relay and simulator."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from server.settings import Settings
from tests.integration.test_relay import joined, upstream_of
from tests.support import ServerThread

REFRESH = '<meta http-equiv="refresh" content="0;url=https://evil.example/">'


async def test_show_html_cannot_send_the_visitor_away(
    relay: tuple[ServerThread, FastAPI, Settings], simulator: ServerThread
) -> None:
    server, app, _ = relay
    sdk = await joined(server)
    upstream = upstream_of(app, simulator, sdk)
    async with httpx.AsyncClient() as http:
        said = await http.post(
            f"{simulator.url}/_sim/sessions/{upstream['id']}/say",
            json={"event": "showHtml", "data": {"mediaUrl": REFRESH + "<h2>Plans</h2>"}},
        )
    assert said.json() == {"ok": True}
    shown = await sdk.wait_for("showHtml")
    assert shown == {"mediaUrl": "<h2>Plans</h2>"}
    await sdk.client.disconnect()
