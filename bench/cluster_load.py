"""Concurrent text conversations held through the cluster of `make cluster`: CPU, RSS and the latency from
a typed line to the avatar's answer, per instance, against a small round through the same cluster in the same
run.

    .venv/bin/python bench/cluster_load.py [--conversations 1000] [--minutes 5] [--interval 10]

Needs AVATAR_BFF_TEST_DATABASE_URL (PostgreSQL: a database of its own is made and dropped) and nginx;
Redis from AVATAR_BFF_REDIS_URL (else the cluster's default), under a key prefix of its own that is deleted
afterwards. Without PostgreSQL or nginx it says why and skips.

Each visitor loads the hosted page through nginx (its token), opens the SDK's socket (WebSocket only), answers
the avatar's handshake as the SDK does, waits for the greeting, then types a line every `--interval` seconds.
The visitors run in a process of their own (this script with `--generate`), speaking Socket.IO's wire
format on plain aiohttp WebSockets (bench/relay.py's `Caller`), so the parent can read every process's CPU and
memory from /proc while they talk. The simulator runs at a fast time scale (replies spoken in a twentieth of
real time) with its conversation time limit out of reach, and the flow has no DPP questions, so conversations
never end by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay import Caller, page_token, rss_kib

from deploy.cluster import CLI, DEFAULT_REDIS_URL, Cluster, ClusterConfig, free_port
from deploy.conversations import SDK_QUERY
from tests.support import fresh_postgres_database

SLUG = "load"
LOAD_FLOWS = {
    "flows": [
        {
            "slug": SLUG,
            "display_name": "Load",
            "client_id": "load-client",
            "flow_id": "load-flow",
            "upstream": "simulator",
            "sdk_mode": "socket",
        }
    ]
}
INSTANCE_SETTINGS = {  # every visitor is 127.0.0.1, and one instance may hold them all
    "AVATAR_BFF_RELAY_MAX_PER_FLOW": "5000",
    "AVATAR_BFF_RELAY_MAX_TOTAL": "5000",
    "AVATAR_BFF_RELAY_MAX_PER_ADDRESS": "5000",  # every client here is 127.0.0.1
    "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "100000",
    "AVATAR_BFF_PAGE_VIEWS_BURST": "100000",
    "AVATAR_BFF_LOG_LEVEL": "warning",
}
# Replies spoken at a twentieth of real time; a time limit the run never reaches (it is scaled too).
SIMULATOR_ARGS = ["--time-scale", "0.05", "--max-sessions", "20000", "--conversation-seconds", "1000000"]
ANSWER = '42["generatingSpeech"'  # the avatar's answer: its text, before the speech chunks
ENDED = ('42["conversationEnded"', '42["conversationTimeExpired"')
TICKS = os.sysconf("SC_CLK_TCK")


# The load generator (its own process)


@dataclass
class Visitor:
    index: int
    interval: float
    measuring: list[bool]  # shared flag: answers count only while it is set
    caller: Caller | None = None
    instance: str = ""
    opened: bool = False
    failure: str = ""  # why it could not open, or why it stopped before the end
    latencies: list[float] = field(default_factory=list)
    unanswered: int = 0  # lines measured whose answer had not come by the next line (or the end)
    _sent_at: float | None = None
    _sent_measured: bool = False

    async def open(self, http: aiohttp.ClientSession, url: str) -> None:
        """Page view, socket, the SDK's handshake, the greeting."""
        token = await page_token(http, url, SLUG)
        caller = self.caller = Caller(http)
        await caller.connect(url, token, SLUG, f"{random.getrandbits(64):016x}", SDK_QUERY)
        self.instance = caller.sid.partition(".")[0] if "." in caller.sid else "?"
        room = {"client": token, "room": "r1"}
        await self.emit("isValidSession", {**room, "flowId": SLUG})
        await self.emit("join", room)
        await caller.until('42["joinComplete"')
        await self.emit("stvNewSession", room)
        await caller.until('42["askPermissions"')
        await self.emit("approvedPermissions", {})
        await caller.until('42["stvFinishedTalking"')  # the greeting said
        self.opened = True

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        assert self.caller is not None and self.caller.ws is not None
        await self.caller.ws.send_str("42" + json.dumps([event, data], separators=(",", ":")))

    async def talk(self, stop: asyncio.Event) -> None:
        """Read everything (pings answered, answers timed) while a typing task types a line every interval."""
        assert self.caller is not None and self.caller.ws is not None
        ws = self.caller.ws
        typing = asyncio.create_task(self._type(stop))
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data: str = message.data
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith(ANSWER):
                    self._answered()
                elif data.startswith(ENDED):
                    self.failure = "the avatar ended the conversation"
                    break
                elif data.startswith("41") or data == "1":
                    self.failure = "the server closed the socket"
                    break
            else:
                if not stop.is_set():
                    self.failure = "the socket closed"
        finally:
            typing.cancel()
        if not self.failure and not stop.is_set():
            self.failure = "the socket closed"

    def _answered(self) -> None:
        if self._sent_at is not None:
            if self._sent_measured:
                self.latencies.append(time.perf_counter() - self._sent_at)
            self._sent_at = None

    async def _type(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, self.interval))  # visitors' lines spread over the interval
        line = 0
        while not stop.is_set():
            if self._sent_at is not None and self._sent_measured:
                self.unanswered += 1
            line += 1
            await self.emit("onTextEntered", {"isSpeechStart": True, "isFinal": False, "text": ""})
            self._sent_at, self._sent_measured = time.perf_counter(), self.measuring[0]
            await self.emit("onTextEntered", {"isFinal": True, "text": f"visitor {self.index} line {line}"})
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._sent_at is not None and self._sent_measured:
            self.unanswered += 1
        if self.caller is not None and self.caller.ws is not None and not self.caller.ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.caller.close()


async def generate(url: str, conversations: int, seconds: float, interval: float, at_once: int) -> None:
    """Open the conversations, say `hold` (stdout), hold them `seconds`, say `end`, print the results."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    measuring = [False]
    stop = asyncio.Event()
    gate = asyncio.Semaphore(at_once)  # visitors arrive a few at a time
    visitors = [Visitor(i, interval, measuring) for i in range(conversations)]
    settled = 0
    all_settled = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:

        async def run(visitor: Visitor) -> None:
            nonlocal settled
            try:
                async with gate:
                    await visitor.open(http, url)
            except Exception as exc:  # recorded: a conversation that could not open is a failure
                visitor.failure = f"open: {type(exc).__name__} {str(exc)[:80]}".strip()
            settled += 1
            if settled == conversations:
                all_settled.set()
            if visitor.opened:
                try:
                    await visitor.talk(stop)
                except Exception as exc:
                    visitor.failure = visitor.failure or f"talk: {type(exc).__name__}"

        tasks = [asyncio.create_task(run(visitor)) for visitor in visitors]
        await all_settled.wait()
        opened_seconds = time.perf_counter() - started
        print("hold", flush=True)
        measuring[0] = True
        await asyncio.sleep(seconds)
        measuring[0] = False
        # Failures are counted up to here: closing below is the bench's own doing.
        failures = Counter(visitor.failure for visitor in visitors if visitor.failure)
        print("end", flush=True)
        await asyncio.sleep(min(interval, 5))  # answers to the last lines still on their way
        stop.set()
        await asyncio.gather(*(visitor.close() for visitor in visitors), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
    instances: dict[str, dict[str, Any]] = {}
    for visitor in visitors:
        if not visitor.opened:
            continue
        entry = instances.setdefault(visitor.instance, {"conversations": 0, "latencies": [], "unanswered": 0})
        entry["conversations"] += 1
        entry["latencies"] += visitor.latencies
        entry["unanswered"] += visitor.unanswered
    every = [t for entry in instances.values() for t in entry["latencies"]]
    result = {
        "opened_seconds": opened_seconds,
        "opened": sum(1 for visitor in visitors if visitor.opened),
        "failures": dict(failures),
        "instances": {name: summarize(entry) for name, entry in sorted(instances.items())},
        "all": summarize({"conversations": conversations, "latencies": every, "unanswered": 0}),
    }
    print(json.dumps(result), flush=True)


def summarize(entry: dict[str, Any]) -> dict[str, Any]:
    latencies: list[float] = entry["latencies"]
    cuts = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) >= 2
        else [float("nan")] * 99
    )
    return {
        "conversations": entry["conversations"],
        "answers": len(latencies),
        "unanswered": entry["unanswered"],
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
    }


# The parent: the cluster, the rounds, the readings


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (nginx's master and workers)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return pids


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


def tree_rss(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, StopIteration):
            total += rss_kib(p)
    return total


@dataclass
class Reading:
    cpu: dict[str, float]
    rss: dict[str, int]


def read(pids: dict[str, int]) -> Reading:
    return Reading({n: tree_cpu(p) for n, p in pids.items()}, {n: tree_rss(p) for n, p in pids.items()})


@dataclass
class Round:
    label: str
    conversations: int
    result: dict[str, Any]
    start: Reading  # before the visitors arrive
    hold: Reading  # all arrived: the held window starts
    end: Reading
    peak_rss: dict[str, int]
    held_seconds: float


def run_round(
    cluster: Cluster, label: str, conversations: int, seconds: float, interval: float, at_once: int
) -> Round:
    pids = {
        "instance-1": cluster.instances[0].pid,
        "instance-2": cluster.instances[1].pid,
        "simulator": cluster.simulator.pid,
        "nginx": cluster.nginx.pid,
    }
    start = read(pids)
    command = [sys.executable, __file__, "--generate", cluster.url, "--conversations", str(conversations),
               "--seconds", str(seconds), "--interval", str(interval), "--at-once", str(at_once)]  # fmt: skip
    generator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    pids["generator"] = generator.pid
    start.cpu["generator"], start.rss["generator"] = 0.0, 0
    peak = dict(start.rss)
    done = threading.Event()

    def sample() -> None:  # peaks, once a second
        while not done.wait(1.0):
            for name, pid in pids.items():
                peak[name] = max(peak[name], tree_rss(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    hold = end = start
    held_from = held_to = 0.0
    result: dict[str, Any] = {}
    assert generator.stdout is not None
    for line in generator.stdout:
        if line.strip() == "hold":
            hold, held_from = read(pids), time.monotonic()
            print(f"  {label}: all {conversations} visitors settled; holding {seconds:.0f} s", flush=True)
        elif line.strip() == "end":
            end, held_to = read(pids), time.monotonic()
        elif line.startswith("{"):
            result = json.loads(line)
    generator.wait()
    done.set()
    sampler.join()
    if generator.returncode != 0 or not result:
        raise SystemExit(f"the load generator failed (exit code {generator.returncode})")
    return Round(label, conversations, result, start, hold, end, peak, held_to - held_from)


def report(run: Round, baseline: Round | None) -> list[str]:
    result = run.result
    failures = result["failures"]
    why = f" ({', '.join(f'{n}: {reason}' for reason, n in failures.items())})" if failures else ""
    lines = [
        f"{run.label}: {run.conversations} conversations, {result['opened']} opened in"
        f" {result['opened_seconds']:.0f} s, held {run.held_seconds:.0f} s;"
        f" failed: {sum(failures.values())}{why}"
    ]
    base = baseline.result["all"] if baseline is not None else None
    for name in ("instance-1", "instance-2", "simulator", "nginx", "generator"):
        cpu = run.end.cpu[name] - run.hold.cpu[name]
        share = cpu / run.held_seconds * 100 if run.held_seconds else float("nan")
        text = (
            f"  {name:<10} CPU {cpu:7.1f} s = {share:3.0f} % of a core;"
            f" RSS {run.start.rss[name] / 1024:4.0f} -> peak {run.peak_rss[name] / 1024:4.0f}"
            f" -> end {run.end.rss[name] / 1024:4.0f} MiB"
        )
        instance = (
            result["instances"].get(name.removeprefix("instance-")) if name.startswith("instance") else None
        )
        if instance is not None:
            text += (
                f"; {instance['conversations']} conversations, {instance['answers']} answers"
                f" p50 {instance['p50_ms']:.1f} ms p99 {instance['p99_ms']:.1f} ms"
                f" (max {instance['max_ms']:.0f}), {instance['unanswered']} unanswered"
            )
            if base is not None:
                text += ratios(instance, base)
        if name == "generator" and share >= 80:
            text += "  <- near a full core: the load generator's own queueing is in these latencies"
        lines.append(text)
    every = result["all"]
    lines.append(
        f"  all        answers p50 {every['p50_ms']:.1f} ms p99 {every['p99_ms']:.1f} ms"
        f" ({every['answers']} answers)" + (ratios(every, base) if base is not None else "")
    )
    return lines


def ratios(latency: dict[str, Any], base: dict[str, Any]) -> str:
    return (
        f"; over baseline: p50 x{latency['p50_ms'] / base['p50_ms']:.2f},"
        f" p99 x{latency['p99_ms'] / base['p99_ms']:.2f}"
    )


def import_flow(cluster: Cluster, work: Path) -> None:
    path = work / "load-flows.json"
    path.write_text(json.dumps(LOAD_FLOWS))
    env = {**os.environ, "AVATAR_BFF_DATABASE_URL": cluster.config.database_url,
           "AVATAR_BFF_DATA_DIR": str(cluster.data_dir)}  # fmt: skip
    subprocess.run(
        [sys.executable, *CLI, "flows", "import", str(path)], env=env, check=True, capture_output=True
    )


def delete_keys(redis_url: str, prefix: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError as exc:
        print(f"could not delete the run's Redis keys ({prefix}*): {exc}")


def machine() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{os.cpu_count()} cores, load average {' '.join(load)}"


def main(args: argparse.Namespace) -> None:
    if not os.environ.get("AVATAR_BFF_TEST_DATABASE_URL"):
        print("cluster load: skipped, needs AVATAR_BFF_TEST_DATABASE_URL (PostgreSQL)")
        return
    if shutil.which("nginx") is None:
        print("cluster load: skipped, nginx is not installed (make nginx)")
        return
    redis_url = os.environ.get("AVATAR_BFF_REDIS_URL") or DEFAULT_REDIS_URL
    prefix = f"bench-load-{uuid.uuid4().hex[:8]}:"
    print(
        f"cluster load: {machine()} at the start; Redis {redis_url.rsplit('@', 1)[-1]} under {prefix}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp, fresh_postgres_database() as database_url:
        work = Path(tmp)
        config = ClusterConfig(
            listen=f"127.0.0.1:{free_port()}",
            database_url=database_url,
            redis_url=redis_url,
            data_dir=work / "cluster",
            log_dir=work / "logs" if not args.logs else Path(args.logs),
            env={**INSTANCE_SETTINGS, "AVATAR_BFF_REDIS_KEY_PREFIX": prefix},
            simulator_args=SIMULATOR_ARGS,
        )
        try:
            with Cluster(config) as cluster:
                import_flow(cluster, work)
                baseline = run_round(
                    cluster,
                    "baseline",
                    args.baseline,
                    args.baseline_seconds,
                    args.baseline_interval,
                    args.at_once,
                )
                full = run_round(
                    cluster, "load", args.conversations, args.minutes * 60, args.interval, args.at_once
                )
        finally:
            delete_keys(redis_url, prefix)
    print(
        f"cluster load ({machine()} at the end); a line every {args.interval:g} s per conversation"
        f" (baseline: every {args.baseline_interval:g} s):"
    )
    for line in report(baseline, None) + report(full, baseline):
        print("  " + line)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=5, help="how long they are held once all are open")
    parser.add_argument("--interval", type=float, default=10, help="seconds between a visitor's typed lines")
    parser.add_argument("--baseline", type=int, default=10, help="conversations of the baseline round")
    parser.add_argument("--baseline-seconds", type=float, default=60)
    # Faster than the load's pace, so its p99 rests on enough answers (10 x 60 = 600); still a light load.
    parser.add_argument("--baseline-interval", type=float, default=1.0)
    parser.add_argument("--at-once", type=int, default=8, help="visitors opening at the same time")
    parser.add_argument("--logs", help="keep the cluster's logs in this directory")
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)  # the generator process
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.conversations <= 20000 or not 1 <= args.baseline <= 20000:
        parser.error("--conversations and --baseline take 1 to 20000")
    intervals = (args.interval, args.baseline_interval)
    if (
        not 0 < args.minutes <= 120
        or not all(0.5 <= i <= 600 for i in intervals)
        or not 1 <= args.at_once <= 256
    ):
        parser.error("--minutes takes up to 120, the intervals 0.5 to 600 s, --at-once 1 to 256")
    return args


if __name__ == "__main__":
    options = parse()
    if options.generate:
        asyncio.run(
            generate(
                options.generate, options.conversations, options.seconds, options.interval, options.at_once
            )
        )
    else:
        main(options)
