"""Event round trips through the relay and through nginx vs straight to the upstream, measured side by side
in one run, against two upstreams: the simulator, and a fast upstream that answers at once (so the proxies'
own cost is what differs); then the relay's memory per idle relayed session.

    .venv/bin/python bench/relay.py [IDLE_SESSIONS]     # 5,000 by default
    .venv/bin/python bench/relay.py 5000 --idle-only    # just the memory figure
    .venv/bin/python bench/relay.py --fast-only         # just the fast upstream's comparison (no memory)
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
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
        },
        {
            "slug": "fast",
            "display_name": "Fast",
            "client_id": "fast-client",
            "flow_id": "fast-flow",
            "upstream": "custom",
            "custom_endpoints": {name: "@FAST@" for name in ("socket", "whep", "api", "meet")},
        },
    ]
}
FAST_UPSTREAM = [sys.executable, str(Path(__file__).resolve().parent / "fast_upstream.py")]


def rss_kib(pid: int) -> int:
    line = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")
    )
    return int(line.split()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Services:
    sim_url: str
    fast_url: str
    bff_url: str
    pids: dict[str, int]  # simulator, fast, relay


@contextmanager
def processes(data_dir: Path) -> Iterator[Services]:
    sim_port, fast_port, bff_port = free_port(), free_port(), free_port()
    sim_url, bff_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{bff_port}"
    fast_url = f"http://127.0.0.1:{fast_port}"
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
        "AVATAR_BFF_RELAY_MAX_PER_ADDRESS": "100000",  # every client here is 127.0.0.1
        # Every caller loads its page from this one address: lift the per-address page limit.
        "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "1000000",
        "AVATAR_BFF_PAGE_VIEWS_BURST": "1000000",
        "AVATAR_BFF_ALLOWED_UPSTREAM_HOSTS": f"127.0.0.1:{fast_port}",
    }
    (data_dir / "flows.json").write_text(json.dumps(FLOWS).replace("@FAST@", fast_url))
    subprocess.run([*CLI, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*CLI, "flows", "import", str(data_dir / "flows.json")], env=env, check=True, capture_output=True
    )
    sim = subprocess.Popen(
        [*CLI, "simulator", "--port", str(sim_port), "--max-sessions", "100000"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    fast = subprocess.Popen([*FAST_UPSTREAM, str(fast_port)])
    bff = subprocess.Popen(
        [*CLI, "serve", "--port", str(bff_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(data_dir / "relay.log").open("wb"),  # its warnings and the open-files line
    )
    try:
        wait_until_up(f"{sim_url}/_sim/health")
        wait_until_up(f"{fast_url}/_sim/health")
        wait_until_up(f"{bff_url}/healthz")
        yield Services(sim_url, fast_url, bff_url, {"simulator": sim.pid, "fast": fast.pid, "relay": bff.pid})
    finally:
        for process in (bff, fast, sim):
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
        self.sid = ""  # the Engine.IO session id (behind the cluster's nginx it starts with the instance id)

    async def connect(
        self, url: str, client: str, flow: str, sticky_id: str = "b" * 16, extra: dict[str, str] | None = None
    ) -> None:
        query = httpx.QueryParams(
            {"client": client, "flowId": flow, "stickyId": sticky_id, **(extra or {}), "EIO": "4",
             "transport": "websocket"}
        )  # fmt: skip
        self.ws = await self.http.ws_connect(f"ws{url.removeprefix('http')}/socket.io/?{query}", compress=0)
        opened = await self.until("0")  # Engine.IO open
        self.sid = str(json.loads(opened[1:]).get("sid", ""))
        await self.ws.send_str("40")
        await self.until('42["onServerConnected"')

    async def until(self, prefix: str) -> str:
        """The next message starting with `prefix`, answering pings meanwhile."""
        assert self.ws is not None
        while True:
            message = await asyncio.wait_for(self.ws.receive_str(), None if prefix == "never" else 30)
            if message == "2":
                await self.ws.send_str("3")  # Engine.IO pong
            elif message.startswith(prefix):
                return message

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


async def page_token(http: aiohttp.ClientSession, bff_url: str, slug: str) -> str:
    """The session token a visitor's page view of flow `slug` hands the SDK."""
    async with http.get(f"{bff_url}/a/{slug}") as response:
        html = await response.text()
    config = json.loads(html.split('id="avatar-config">')[1].split("</script>")[0])
    return str(config["session"]["token"])


async def callers(
    http: aiohttp.ClientSession,
    n: int,
    url: str,
    bff_url: str | None,
    slug: str,
    at_once: int = 1,
    keepers: list[asyncio.Task[None]] | None = None,
) -> list[Caller]:
    """`n` connected callers; through the relay each with a page view's token, else with the flow's ids.

    With `keepers`, each caller answers pings from the moment it is connected (a task per caller, added to
    the list): opening thousands takes longer than Engine.IO's ping timeout."""
    made: list[Caller] = []
    gate = asyncio.Semaphore(at_once)

    async def one() -> None:
        async with gate:
            caller = Caller(http)
            if bff_url is None:
                await caller.connect(url, f"{slug}-client", f"{slug}-flow")
            else:
                await caller.connect(url, await page_token(http, bff_url, slug), slug)
            made.append(caller)
            if keepers is not None:
                keepers.append(asyncio.create_task(keep(caller)))

    await asyncio.gather(*(one() for _ in range(n)))
    return made


async def keep(caller: Caller) -> None:
    """Answer a caller's pings until cancelled."""
    await caller.until("never")


ROUNDS = 5


@dataclass
class Target:
    url: str
    bff_url: str | None  # where pages come from, for callers that need a page session token
    pids: dict[str, int]  # processes whose CPU counts
    slug: str  # the flow: its page on the relay, or its ids (`<slug>-client`, `<slug>-flow`) direct


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


async def compare(
    http: aiohttp.ClientSession, targets: dict[str, Target], n: int, per_caller: int
) -> dict[str, Run]:
    """Rounds alternate between the targets, so a slow moment of the machine does not favour one of them."""
    groups = {
        label: await callers(http, n, target.url, target.bff_url, target.slug)
        for label, target in targets.items()
    }
    for group in groups.values():
        await asyncio.gather(*(c.round_trips(per_caller) for c in group))  # warm up, untimed
    runs: dict[str, list[Run]] = {label: [] for label in targets}
    for _ in range(ROUNDS):
        for label, group in groups.items():
            # The other groups wait their turn answering pings: a round can outlast Engine.IO's ping timeout.
            keepers = [
                asyncio.create_task(keep(caller))
                for other, waiting in groups.items()
                if other != label
                for caller in waiting
            ]
            runs[label].append(await measure(group, per_caller, targets[label].pids))
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
    medians = {label: median_run(runs[label]) for label in targets}
    print(f"{n} session(s), {ROUNDS} rounds of {n * per_caller:,} round trips each:")
    for label in targets:
        print(report(label, medians[label], medians["direct"]))
    for group in groups.values():
        for caller in group:
            await caller.close()
    return medians


async def main(idle_sessions: int, idle_only: bool, fast_only: bool) -> None:
    # The callers' own sockets: one per idle session, raised like `serve` raises its own.
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    with tempfile.TemporaryDirectory() as tmp, processes(Path(tmp)) as svc:
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        summary = []
        upstreams = [("simulator", svc.sim_url, "bench"), ("fast upstream", svc.fast_url, "fast")]
        if fast_only:
            upstreams = upstreams[1:]
        for upstream, upstream_url, slug in [] if idle_only else upstreams:
            name = "simulator" if slug == "bench" else "fast"
            pids = {name: svc.pids[name], "relay": svc.pids["relay"]}
            host = upstream_url.removeprefix("http://")
            with nginx_in_front_of(host, Path(tmp) / f"nginx-{slug}") as nginx:
                targets = {"direct": Target(upstream_url, None, {name: pids[name]}, slug)}
                if nginx is not None:
                    targets["nginx"] = Target(nginx[0], None, {name: pids[name], "nginx": nginx[1]}, slug)
                targets["relay"] = Target(svc.bff_url, svc.bff_url, pids, slug)
                print(f"{upstream}: event round trip (checkAvailability -> availabilityResult)")
                one = await compare(http, targets, 1, 1000)
                fifty = await compare(http, targets, 50, 200)
            added = pct(one["relay"].timings, 50) - pct(one["direct"].timings, 50)
            line = f"{upstream}: relay added p50 at 1 session {added:+.3f} ms"
            if "nginx" in fifty:
                ratio = fifty["relay"].rate / fifty["nginx"].rate
                line += f"; relay / nginx throughput at 50 sessions {ratio:.2f}"
            else:
                line += "; nginx not installed (apt-get install nginx-light), so no relay / nginx ratio"
            summary.append(line)
        if not fast_only:
            await idle(http, svc, idle_sessions)
        await http.close()
        limits = read_lines(Path(f"/proc/{svc.pids['relay']}/limits"))
        summary += [" ".join(line.split()) + " (the relay's, as `serve` set it)" for line in limits
                    if line.startswith("Max open files")]  # fmt: skip
        warnings = "\n".join(read_lines(Path(tmp) / "relay.log"))
        if warnings:
            print("relay's log:\n" + warnings[-2000:])
    print("summary (targets, fast upstream: relay / nginx >= 0.80 at 50 sessions, added p50 <= 0.15 ms):")
    for line in summary:
        print("  " + line)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def idle(http: aiohttp.ClientSession, svc: Services, sessions: int) -> None:
    """Idle relayed sessions of the fast upstream's flow: the relay's RSS per session, both legs."""
    pid = svc.pids["relay"]
    before = rss_kib(pid)
    started = time.perf_counter()
    # Idle like a browser tab: nothing said, heartbeats answered (else the relay drops a socket at 45 s).
    heartbeats: list[asyncio.Task[None]] = []
    # A few at a time, like visitors arriving (32 at a time measured the same per session).
    idle = await callers(http, sessions, svc.bff_url, svc.bff_url, "fast", at_once=4, keepers=heartbeats)
    opened = time.perf_counter() - started
    samples: list[tuple[int, int, int]] = []
    for wait in (5, 30):  # a ping cycle (25 s) of both legs later, too
        await asyncio.sleep(wait - (samples[-1][0] if samples else 0))
        alive = sum(1 for caller in idle if caller.ws is not None and not caller.ws.closed)
        samples.append((wait, rss_kib(pid), alive))
    for wait, after, alive in samples:
        print(
            f"{sessions} idle relayed sessions (fast upstream; opened in {opened:.0f} s), after {wait} s:"
            f" {alive} open; relay RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
            f" = {(after - before) / sessions:.1f} KiB per session (browser socket + upstream socket)"
        )
    for task in heartbeats:
        task.cancel()
    await asyncio.gather(*(caller.close() for caller in idle), return_exceptions=True)


if __name__ == "__main__":
    numbers = [arg for arg in sys.argv[1:] if arg.isdigit()]
    asyncio.run(
        main(int(numbers[0]) if numbers else 5000, "--idle-only" in sys.argv, "--fast-only" in sys.argv)
    )
