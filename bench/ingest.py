"""Transcript ingest throughput through the HTTP API vs raw SQLAlchemy inserts into the same database,
and p99 latency of fetching a 500-line transcript. Figures are ratios measured side by side in one run:
rounds alternate between the two methods (the database server is shared), and the ratio is the median of the
rounds' ratios. The server is `avatar-bff serve` in a process of its own, as deployed: in this process its
event loop would share one interpreter lock with the bench's HTTP clients, and measure them as much as it.

    .venv/bin/python bench/ingest.py            # SQLite (temp file)
    AVATAR_BFF_TEST_DATABASE_URL=postgresql+asyncpg://… .venv/bin/python bench/ingest.py   # and PostgreSQL
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import migrate
from server.models import Conversation, Flow, TranscriptEntry
from server.security.signing import PAGE_SESSION, Signer
from tests import factories
from tests.support import (
    TEST_SECRET,
    database,
    db_session,
    free_port,
    fresh_postgres_database,
    make_settings,
    wait_until_up,
)

SESSIONS, LINES, BATCH, CLIENTS = 40, 250, 25, 8  # 10,000 lines per method
ROUNDS = 4  # each method writes SESSIONS / ROUNDS conversations per round
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLI = [sys.executable, "-c", "from server.cli import main; main()"]


@contextmanager
def server(data_dir: Path, database_url: str) -> Iterator[str]:
    """`avatar-bff serve` on the bench's database (already migrated), with the test settings' secret."""
    port = free_port()
    env = {
        **os.environ,
        "AVATAR_BFF_ENVIRONMENT": "dev",
        "AVATAR_BFF_DATA_DIR": str(data_dir),
        "AVATAR_BFF_DATABASE_URL": database_url,
        "AVATAR_BFF_SECRET_KEY": TEST_SECRET,
        "AVATAR_BFF_REDIS_URL": "",
        "AVATAR_BFF_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/healthz")
        yield url
    finally:
        process.terminate()
        process.wait()


async def seed(settings: object, count: int, prefix: str) -> list[str]:
    """Conversations already started, on a flow of their own (`bench-<prefix>`)."""
    async with db_session(settings) as db:  # type: ignore[arg-type]
        flow = Flow(slug=f"bench-{prefix}", display_name="Bench", client_id="c", flow_id="f")
        db.add(flow)
        await db.flush()
        ids = [f"{prefix}{n:04d}" for n in range(count)]
        db.add_all(Conversation(id=i, flow_id=flow.id) for i in ids)
        await db.commit()
        return ids


def page_token(signer: Signer, conversation_id: str) -> str:
    """What the hosted page would hold for a seeded conversation (its flow is named after the id's prefix)."""
    flow = "bench-" + conversation_id.rstrip("0123456789")
    return signer.sign(PAGE_SESSION, {"sid": conversation_id, "flow": flow, "v": None, "ctx": {}}, 3600)


def line(seq: int) -> dict[str, object]:
    when = (T0 + timedelta(seconds=seq)).isoformat()
    return {
        "seq": seq,
        "role": "Avatar" if seq % 2 else "User",
        "text": f"Line {seq} of the bench.",
        "timestamp": when,
    }


async def raw_inserts(settings: object, ids: list[str]) -> float:
    start = time.perf_counter()
    async with db_session(settings) as db:  # type: ignore[arg-type]
        for session_id in ids:
            for first in range(1, LINES + 1, BATCH):
                db.add_all(
                    TranscriptEntry(
                        conversation_id=session_id,
                        seq=s,
                        role="Avatar",
                        text=f"Line {s} of the bench.",
                        timestamp=T0 + timedelta(seconds=s),
                        source="page",
                    )
                    for s in range(first, first + BATCH)
                )
                await db.commit()
    return len(ids) * LINES / (time.perf_counter() - start)


async def api_ingest(url: str, signer: Signer, ids: list[str]) -> float:
    tokens = {i: page_token(signer, i) for i in ids}
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for session_id in ids:
        for first in range(1, LINES + 1, BATCH):
            queue.put_nowait((session_id, first))

    # aiohttp, at about a third of httpx's CPU per request: the clients share the two cores with the server
    # and the database, and what they spend is not the server's cost.
    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            session_id, first = queue.get_nowait()
            body = {"token": tokens[session_id], "entries": [line(s) for s in range(first, first + BATCH)]}
            async with http.post(f"{url}/api/v1/page/transcript", json=body) as response:
                response.raise_for_status()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
        return len(ids) * LINES / (time.perf_counter() - start)


async def fetch_p99(url: str, settings: object, session_id: str) -> float:
    async with database(settings) as db:  # type: ignore[arg-type]
        token = await factories.create_api_token(db, "transcripts:read")
    timings = []
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {token}"}) as http:
        for _ in range(200):
            start = time.perf_counter()
            response = await http.get(f"/api/v1/sessions/{session_id}/transcript")
            timings.append(time.perf_counter() - start)
            assert len(response.json()["entries"]) == 500
    return statistics.quantiles(timings, n=100)[98] * 1000


def run(label: str, database_url: str | None, data_dir: Path) -> None:
    overrides = {"database_url": database_url} if database_url else {}
    settings = make_settings(data_dir, **overrides)
    migrate.upgrade(settings.effective_database_url)
    raw_ids = asyncio.run(seed(settings, SESSIONS, "raw"))
    api_ids = asyncio.run(seed(settings, SESSIONS, "api"))
    big = asyncio.run(seed(settings, 1, "big"))[0]
    per_round = SESSIONS // ROUNDS
    raws, apis = [], []
    with server(data_dir, settings.effective_database_url) as url:
        signer = Signer(settings.secret)
        for n in range(ROUNDS):
            these = slice(n * per_round, (n + 1) * per_round)
            raws.append(asyncio.run(raw_inserts(settings, raw_ids[these])))
            apis.append(asyncio.run(api_ingest(url, signer, api_ids[these])))
        asyncio.run(api_ingest_one(url, signer, big))
        p99 = asyncio.run(fetch_p99(url, settings, big))
    ratio = statistics.median(a / r for a, r in zip(apis, raws, strict=True))
    rounds = ", ".join(f"{a / r:.2f}" for a, r in zip(apis, raws, strict=True))
    print(f"{label}: raw inserts {statistics.median(raws):,.0f} lines/s; API {statistics.median(apis):,.0f} "
          f"lines/s (medians of {ROUNDS} alternating rounds) = {ratio:.2f} x raw (rounds: {rounds}; batches "
          f"of {BATCH}, {CLIENTS} clients); 500-line transcript fetch p99 {p99:.1f} ms")  # fmt: skip


async def api_ingest_one(url: str, signer: Signer, session_id: str) -> None:
    token = page_token(signer, session_id)
    async with httpx.AsyncClient(base_url=url) as http:
        for first in range(1, 501, 100):
            body = {"token": token, "entries": [line(s) for s in range(first, first + 100)]}
            (await http.post("/api/v1/page/transcript", json=body)).raise_for_status()


def main() -> None:
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run("SQLite", None, data_dir / "sqlite")
        if os.environ.get("AVATAR_BFF_TEST_DATABASE_URL"):
            run("PostgreSQL", stack.enter_context(fresh_postgres_database()), data_dir / "pg")


if __name__ == "__main__":
    main()
