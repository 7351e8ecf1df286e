"""Event round trips through the relay vs straight to the simulator, measured side by side in one run;
and the relay's memory per idle relayed session.

    .venv/bin/python bench/relay.py [IDLE_SESSIONS]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import TEST_SECRET, free_port

CLI = [sys.executable, "-c", "from server.cli import main; main()"]
FLOWS = {
    "flows": [
        {
            "slug": "bench",
            "display_name": "Bench",
            "client_id": "bench-client",
            "flow_id": "bench-flow",
            "upstream": "simulator",
        }
    ]
}


def rss_kib(pid: int) -> int:
    line = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")
    )
    return int(line.split()[1])


def wait_until_up(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def processes(data_dir: Path) -> Iterator[tuple[str, str, int]]:
    sim_port, bff_port = free_port(), free_port()
    sim_url, bff_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{bff_port}"
    env = {
        **os.environ,
        "AVATAR_BFF_ENVIRONMENT": "dev",
        "AVATAR_BFF_DATA_DIR": str(data_dir),
        "AVATAR_BFF_SECRET_KEY": TEST_SECRET,
        "AVATAR_BFF_SIMULATOR_URL": sim_url,
        "AVATAR_BFF_LOG_LEVEL": "warning",
        "AVATAR_BFF_RELAY_EVENTS_PER_SECOND": "1000000",
        "AVATAR_BFF_RELAY_MAX_PER_FLOW": "100000",
        "AVATAR_BFF_RELAY_MAX_TOTAL": "100000",
    }
    (data_dir / "flows.json").write_text(json.dumps(FLOWS))
    subprocess.run([*CLI, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*CLI, "flows", "import", str(data_dir / "flows.json")], env=env, check=True, capture_output=True
    )
    sim = subprocess.Popen(
        [*CLI, "simulator", "--port", str(sim_port), "--max-sessions", "100000"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    bff = subprocess.Popen(
        [*CLI, "serve", "--port", str(bff_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"{sim_url}/_sim/health")
        wait_until_up(f"{bff_url}/healthz")
        yield sim_url, bff_url, bff.pid
    finally:
        for process in (bff, sim):
            process.terminate()
            process.wait()


class Caller:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.ready = asyncio.Event()
        self.answer = asyncio.Event()
        self.client.on("onServerConnected", lambda *_: self.ready.set())
        self.client.on("availabilityResult", lambda *_: self.answer.set())

    async def connect(self, url: str, client: str, flow: str) -> None:
        query = httpx.QueryParams({"client": client, "flowId": flow, "stickyId": "b" * 16})
        await self.client.connect(f"{url}/?{query}", socketio_path="socket.io", transports=["websocket"])
        await asyncio.wait_for(self.ready.wait(), 30)

    async def round_trips(self, count: int) -> list[float]:
        timings = []
        for _ in range(count):
            self.answer.clear()
            started = time.perf_counter()
            await self.client.emit("checkAvailability", {})
            await asyncio.wait_for(self.answer.wait(), 10)
            timings.append(time.perf_counter() - started)
        return timings


async def callers(n: int, url: str, bff_url: str | None) -> list[Caller]:
    made = []
    for _ in range(n):
        caller = Caller()
        if bff_url is None:
            await caller.connect(url, "bench-client", "bench-flow")
        else:
            html = httpx.get(f"{bff_url}/a/bench").text
            token = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])["session"]["token"]
            await caller.connect(url, token, "bench")
        made.append(caller)
    return made


async def measure(n: int, per_caller: int, url: str, bff_url: str | None) -> tuple[list[float], float]:
    group = await callers(n, url, bff_url)
    await asyncio.gather(*(c.round_trips(20) for c in group))  # warm up
    started = time.perf_counter()
    results = await asyncio.gather(*(c.round_trips(per_caller) for c in group))
    elapsed = time.perf_counter() - started
    for caller in group:
        await caller.client.disconnect()
    return [t for timings in results for t in timings], n * per_caller / elapsed


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def main(idle_sessions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, processes(Path(tmp)) as (sim_url, bff_url, bff_pid):
        print(
            "event round trip (checkAvailability -> availabilityResult), python-socketio clients, WebSocket"
        )
        for n, per in ((1, 400), (50, 60)):
            direct, direct_rate = await measure(n, per, sim_url, None)
            relayed, relayed_rate = await measure(n, per, bff_url, bff_url)
            print(
                f"{n:>3} session(s): direct p50 {pct(direct, 50):.2f} ms p99 {pct(direct, 99):.2f} ms "
                f"{direct_rate:,.0f}/s | relay p50 {pct(relayed, 50):.2f} ms p99 {pct(relayed, 99):.2f} ms "
                f"{relayed_rate:,.0f}/s | added p50 {pct(relayed, 50) - pct(direct, 50):.2f} ms "
                f"p99 {pct(relayed, 99) - pct(direct, 99):.2f} ms | ratio {relayed_rate / direct_rate:.2f}"
            )
        before = rss_kib(bff_pid)
        idle = await callers(idle_sessions, bff_url, bff_url)
        await asyncio.sleep(2)
        after = rss_kib(bff_pid)
        print(
            f"{idle_sessions} idle relayed sessions: relay RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
            f" = {(after - before) / idle_sessions:.0f} KiB per session (browser socket + upstream socket)"
        )
        for caller in idle:
            await caller.client.disconnect()
        print("nginx: not compared by this script yet (it is not installed on this machine)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
