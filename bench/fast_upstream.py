"""A Socket.IO upstream that answers at once, for measuring what a proxy in front of it costs.

It speaks just enough Engine.IO 4 / Socket.IO 5 over WebSocket for the relay and the bench's callers: the
open packet, the namespace connect with `onServerConnected` after it, and `availabilityResult` for every
`checkAvailability`. No logging, no state per socket beyond websockets' own, no permessage-deflate.

    .venv/bin/python bench/fast_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

OPEN = '0{{"sid":"{}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}'
PING_SECONDS = 25  # Engine.IO pings, as a real service sends them (the relay hangs up after 45 s of silence)
GREETING = '42["onServerConnected",{"agentName":"Fast","hostName":"fast","loadingVideoURL":"","finalUrl":""}]'
ANSWER = '42["availabilityResult",{"available":true}]'
ASK = '42["checkAvailability"'


def health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.startswith("/socket.io/"):
        return None  # a WebSocket handshake: go on
    return connection.respond(HTTPStatus.OK, "ok\n")  # /_sim/health and anything else


open_sockets: set[ServerConnection] = set()


async def session(ws: ServerConnection) -> None:
    sid = ws.id.hex[:20]
    await ws.send(OPEN.format(sid))
    open_sockets.add(ws)
    try:
        await answer(ws, sid)
    finally:
        open_sockets.discard(ws)


async def answer(ws: ServerConnection, sid: str) -> None:
    async for message in ws:
        if isinstance(message, bytes):
            continue
        if message.startswith(ASK):
            await ws.send(ANSWER)
        elif message.startswith("40"):
            await ws.send(f'40{{"sid":"{sid}"}}')
            await ws.send(GREETING)
        elif message == "41":
            return


async def main(port: int) -> None:
    async with serve(
        session,
        "127.0.0.1",
        port,
        process_request=health,
        compression=None,
        ping_interval=None,  # Engine.IO's own pings instead, all from one task
        backlog=1024,
    ):
        while True:
            await asyncio.sleep(PING_SECONDS)
            for ws in list(open_sockets):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send("2")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
