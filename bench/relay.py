"""Event round trips through the relay vs straight to the simulator, measured side by side in one run;
and the relay's memory per idle relayed session.

    .venv/bin/python bench/relay.py [IDLE_SESSIONS]
"""

from __future__ import annotations

import asyncio
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_until_up(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


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


@dataclass
class Run:
    timings: list[float]
    rate: float  # round trips per second
    cpu_us: dict[str, float]  # CPU per round trip, by process


async def measure(n: int, per_caller: int, url: str, bff_url: str | None, pids: dict[str, int]) -> Run:
    group = await callers(n, url, bff_url)
    await asyncio.gather(*(c.round_trips(20) for c in group))  # warm up
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"client": time.process_time()}
    started = time.perf_counter()
    results = await asyncio.gather(*(c.round_trips(per_caller) for c in group))
    elapsed = time.perf_counter() - started
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"client": time.process_time()}
    for caller in group:
        await caller.client.disconnect()
    count = n * per_caller
    cpu = {name: (cpu_after[name] - cpu_before[name]) / count * 1e6 for name in cpu_before}
    return Run([t for timings in results for t in timings], count / elapsed, cpu)


def cpu_line(run: Run) -> str:
    return ", ".join(f"{name} {us:.0f}" for name, us in run.cpu_us.items() if us >= 0.5)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


@contextmanager
def nginx_in_front_of(upstream: str, workdir: Path) -> Iterator[str | None]:
    """nginx proxying WebSockets to `upstream`: the yardstick for a relay (None: nginx is not installed)."""
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
        yield f"http://127.0.0.1:{port}"
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
        + f"  | CPU per round trip (us): {cpu_line(run)}"
    )


async def main(idle_sessions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, processes(Path(tmp)) as (sim_url, bff_url, pids):
        with nginx_in_front_of(sim_url.removeprefix("http://"), Path(tmp) / "nginx") as nginx_url:
            print("event round trip (checkAvailability -> availabilityResult), python-socketio clients")
            for n, per in ((1, 400), (50, 60)):
                print(f"{n} session(s):")
                direct = await measure(n, per, sim_url, None, pids)
                print(report("direct", direct, direct))
                if nginx_url is not None:
                    print(report("nginx", await measure(n, per, nginx_url, None, pids), direct))
                print(report("relay", await measure(n, per, bff_url, bff_url, pids), direct))
            if nginx_url is None:
                print("nginx: not installed, so no nginx line (apt-get install nginx-light)")
        before = rss_kib(pids["relay"])
        idle = await callers(idle_sessions, bff_url, bff_url)
        await asyncio.sleep(2)
        after = rss_kib(pids["relay"])
        print(
            f"{idle_sessions} idle relayed sessions: relay RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
            f" = {(after - before) / idle_sessions:.0f} KiB per session (browser socket + upstream socket)"
        )
        for caller in idle:
            await caller.client.disconnect()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
