"""100 concurrent text-only conversations against one simulator process; CPU and memory per session.

.venv/bin/python bench/simulator_load.py [SESSIONS]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime + stime of the process and of its waited-for children (espeak-ng runs as a child)
    return sum(int(value) for value in fields[11:15]) / TICKS


def rss_kib(pid: int) -> int:
    line = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")
    )
    return int(line.split()[1])


async def one_conversation(url: str) -> float:
    client = socketio.AsyncClient(reconnection=False)
    ended = asyncio.Event()
    talked = 0

    @client.on("*")
    async def on_event(event: str, *args: object) -> None:
        nonlocal talked
        if event == "onServerConnected":
            await client.emit("isValidSession", {"client": "c"})
            await client.emit("join", {"client": "c"})
        elif event == "joinComplete":
            await client.emit("stvNewSession", {"client": "c"})
        elif event == "showAgent":
            await client.emit("approvedPermissions", {})
        elif event == "stvFinishedTalking":
            talked += 1
            text = "show me a table" if talked == 1 else "bye"
            if talked <= 2:
                await client.emit("onTextEntered", {"text": text, "isFinal": True})
        elif event == "conversationEnded":
            ended.set()

    started = time.perf_counter()
    await client.connect(f"{url}/?client=c&flowId=f", socketio_path="socket.io", transports=["websocket"])
    await asyncio.wait_for(ended.wait(), 120)
    await client.disconnect()
    return time.perf_counter() - started


async def main(sessions: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from server.cli import main; main()", "simulator", "--port", str(port),
               "--max-sessions", str(sessions * 2)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/_sim/health")
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        idle_rss, cpu_before = rss_kib(process.pid), cpu_seconds(process.pid)
        started = time.perf_counter()
        durations = await asyncio.gather(*(one_conversation(url) for _ in range(sessions)))
        wall = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - cpu_before
        peak_rss = rss_kib(process.pid)
    finally:
        process.terminate()
        process.wait()
    print(
        f"{sessions} concurrent text-only conversations (greeting, a table, bye) in {wall:.1f} s"
        f" (each {min(durations):.1f}-{max(durations):.1f} s, paced in real time)"
    )
    print(
        f"simulator CPU {cpu:.1f} s = {cpu / sessions * 1000:.0f} ms a session; RSS {idle_rss / 1024:.0f} MiB"
        f" idle, {peak_rss / 1024:.0f} MiB after = {(peak_rss - idle_rss) / sessions:.0f} KiB per session"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
