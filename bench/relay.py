"""Event round trips through the relay vs straight to the simulator, measured side by side in one run;
and the relay's memory per idle relayed session.

    .venv/bin/python bench/relay.py [IDLE_SESSIONS]
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import TEST_SECRET, free_port, wait_until_up

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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextmanager
def processes(data_dir: Path) -> Iterator[tuple[str, str, dict[str, int]]]:
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
        # Every caller loads its page from this one address: lift the per-address page limit.
        "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "1000000",
        "AVATAR_BFF_PAGE_VIEWS_BURST": "1000000",
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
        yield sim_url, bff_url, {"simulator": sim.pid, "relay": bff.pid}
    finally:
        for process in (bff, sim):
            process.terminate()
            process.wait()


class Caller:
    """A browser stand-in speaking Socket.IO's wire format on one WebSocket.

    The load generator shares the two cores with the processes it measures. A python-socketio client costs
    about as much CPU per event as the simulator does, so with it every added process looked slower mostly
    because the load generator took its share; this one costs a fifth of that.
    """

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, url: str, client: str, flow: str) -> None:
        query = httpx.QueryParams(
            {"client": client, "flowId": flow, "stickyId": "b" * 16, "EIO": "4", "transport": "websocket"}
        )
        self.ws = await self.http.ws_connect(f"ws{url.removeprefix('http')}/socket.io/?{query}", compress=0)
        await self.until("0")  # Engine.IO open
        await self.ws.send_str("40")
        await self.until('42["onServerConnected"')

    async def until(self, prefix: str) -> None:
        assert self.ws is not None
        while True:
            message = await asyncio.wait_for(self.ws.receive_str(), 30)
            if message == "2":
                await self.ws.send_str("3")  # Engine.IO pong
            elif message.startswith(prefix):
                return

    async def round_trips(self, count: int) -> list[float]:
        assert self.ws is not None
        timings = []
        for _ in range(count):
            started = time.perf_counter()
            await self.ws.send_str('42["checkAvailability",{}]')
            await self.until('42["availabilityResult"')
            timings.append(time.perf_counter() - started)
        return timings

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.send_str("41")
            await self.ws.close()


async def callers(http: aiohttp.ClientSession, n: int, url: str, bff_url: str | None) -> list[Caller]:
    made = []
    for _ in range(n):
        caller = Caller(http)
        if bff_url is None:
            await caller.connect(url, "bench-client", "bench-flow")
        else:
            html = httpx.get(f"{bff_url}/a/bench").text
            token = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])["session"]["token"]
            await caller.connect(url, token, "bench")
        made.append(caller)
    return made


ROUNDS = 5


@dataclass
class Target:
    url: str
    bff_url: str | None  # where pages come from, for callers that need a page session token
    pids: dict[str, int]  # processes whose CPU counts


@dataclass
class Run:
    timings: list[float]
    rate: float  # round trips per second
    cpu_us: dict[str, float]  # CPU per round trip, by process


async def measure(group: list[Caller], per_caller: int, pids: dict[str, int]) -> Run:
    """One timed round: every caller does `per_caller` round trips, all at once."""
    gc.collect()
    gc.disable()  # the load generator's own collector pauses would count against whichever target is running
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"client": time.process_time()}
    started = time.perf_counter()
    results = await asyncio.gather(*(c.round_trips(per_caller) for c in group))
    elapsed = time.perf_counter() - started
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"client": time.process_time()}
    gc.enable()
    count = len(group) * per_caller
    cpu = {name: (cpu_after[name] - cpu_before[name]) / count * 1e6 for name in cpu_before}
    return Run([t for timings in results for t in timings], count / elapsed, cpu)


def median_run(runs: list[Run]) -> Run:
    """All rounds' timings; the median round's rate and CPU (rounds swing with what else the cores do)."""
    middle = sorted(runs, key=lambda run: run.rate)[len(runs) // 2]
    return Run([t for run in runs for t in run.timings], middle.rate, middle.cpu_us)


def cpu_line(run: Run) -> str:
    return ", ".join(f"{name} {us:.0f}" for name, us in run.cpu_us.items() if us >= 0.5)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


@contextmanager
def nginx_in_front_of(upstream: str, workdir: Path) -> Iterator[tuple[str, int] | None]:
    """nginx proxying WebSockets to `upstream`, a relay's yardstick: (URL, worker pid); None if absent."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        yield None
        return
    port = free_port()
    workdir.mkdir()
    (workdir / "nginx.conf").write_text(
        NGINX_CONF.replace("@PORT@", str(port)).replace("@UPSTREAM@", upstream).replace("@DIR@", str(workdir))
    )
    nginx = subprocess.Popen([binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")])
    try:
        wait_until_up(f"http://127.0.0.1:{port}/_sim/health")
        worker = Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split()
        yield f"http://127.0.0.1:{port}", int(worker[0]) if worker else nginx.pid
    finally:
        nginx.terminate()
        nginx.wait()


NGINX_CONF = """
daemon off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    upstream sim { server @UPSTREAM@; keepalive 64; }
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 120s;
        }
    }
}
"""


def report(label: str, run: Run, direct: Run) -> str:
    added50, added99 = (
        pct(run.timings, 50) - pct(direct.timings, 50),
        pct(run.timings, 99) - pct(direct.timings, 99),
    )
    return (
        f"  {label:<7} p50 {pct(run.timings, 50):6.2f} ms  p99 {pct(run.timings, 99):6.2f} ms"
        f"  {run.rate:7,.0f}/s"
        + (
            ""
            if run is direct
            else f"  added p50 {added50:+.2f} ms p99 {added99:+.2f} ms  ratio {run.rate / direct.rate:.2f}"
        )
        + f"  | CPU: {cpu_line(run)}"
    )


async def compare(http: aiohttp.ClientSession, targets: dict[str, Target], n: int, per_caller: int) -> None:
    """Rounds alternate between the targets, so a slow moment of the machine does not favour one of them."""
    groups = {label: await callers(http, n, target.url, target.bff_url) for label, target in targets.items()}
    for group in groups.values():
        await asyncio.gather(*(c.round_trips(per_caller) for c in group))  # warm up, untimed
    runs: dict[str, list[Run]] = {label: [] for label in targets}
    for _ in range(ROUNDS):
        for label, group in groups.items():
            runs[label].append(await measure(group, per_caller, targets[label].pids))
    direct = median_run(runs["direct"])
    print(f"{n} session(s), {ROUNDS} rounds of {n * per_caller:,} round trips each:")
    for label in targets:
        print(report(label, median_run(runs[label]) if label != "direct" else direct, direct))
    for group in groups.values():
        for caller in group:
            await caller.close()


async def main(idle_sessions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, processes(Path(tmp)) as (sim_url, bff_url, pids):
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        with nginx_in_front_of(sim_url.removeprefix("http://"), Path(tmp) / "nginx") as nginx:
            targets = {"direct": Target(sim_url, None, pids)}
            if nginx is not None:
                targets["nginx"] = Target(nginx[0], None, pids | {"nginx": nginx[1]})
            targets["relay"] = Target(bff_url, bff_url, pids)
            print("event round trip (checkAvailability -> availabilityResult); CPU per round trip in us")
            await compare(http, targets, 1, 1000)
            await compare(http, targets, 50, 200)
            if nginx is None:
                print("nginx: not installed, so no nginx line (apt-get install nginx-light)")
        before = rss_kib(pids["relay"])
        idle = await callers(http, idle_sessions, bff_url, bff_url)
        # Idle like a browser tab: nothing said, heartbeats answered (else the relay drops a socket at 45 s).
        heartbeats = [asyncio.create_task(caller.until("never")) for caller in idle]
        await asyncio.sleep(2)
        after = rss_kib(pids["relay"])
        print(
            f"{idle_sessions} idle relayed sessions: relay RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
            f" = {(after - before) / idle_sessions:.0f} KiB per session (browser socket + upstream socket)"
        )
        for task in heartbeats:
            task.cancel()
        for caller in idle:
            await caller.close()
        await http.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
