"""Test support: settings in a temp dir, real servers on loopback ports, fresh PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import Database
from server.errors import NotFound
from server.models import ApiToken, utcnow
from server.security.secrets_hashing import new_api_token
from server.settings import Settings, load_settings
from server.transcripts.merge import CanonicalEntry
from server.transcripts.store import transcript_of

T = TypeVar("T")
TEST_SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str) -> None:
    """Until a server started in another process answers at `url` (20 s at most)."""
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "dev",
        "data_dir": data_dir,
        "secret_key": TEST_SECRET,
        "simulator_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there unless a test starts it
    }
    values.update(overrides)
    return load_settings(**values)


class ServerThread:
    """Runs an ASGI app under uvicorn in a background thread, like production but on a free port."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    parsed = make_url(url).set(drivername="postgresql")
    connection = await asyncpg.connect(parsed.render_as_string(hide_password=False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the server named by AVATAR_BFF_TEST_DATABASE_URL, dropped afterwards."""
    base = os.environ["AVATAR_BFF_TEST_DATABASE_URL"]
    name = f"abff_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@asynccontextmanager
async def db_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on the test database (its own engine, disposed afterwards)."""
    db = Database(settings.effective_database_url)
    try:
        async with db.reading() as session:
            yield session
    finally:
        await db.dispose()


async def stored_transcript(settings: Settings, conversation_id: str) -> list[CanonicalEntry]:
    """The canonical transcript as the API would give it (empty while the conversation has not started)."""
    db = Database(settings.effective_database_url)
    try:
        return await transcript_of(db, conversation_id)
    except NotFound:
        return []
    finally:
        await db.dispose()


async def add_api_token(settings: Settings, *scopes: str, revoked: bool = False) -> str:
    """Store a REST API token with these scopes; returns the bearer secret."""
    new = new_api_token()
    async with db_session(settings) as db:
        db.add(
            ApiToken(
                name="test",
                prefix=new.prefix,
                token_hash=new.token_hash,
                scopes=list(scopes),
                revoked_at=utcnow() if revoked else None,
            )
        )
        await db.commit()
    return new.token


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync test code, in a thread of its own.

    Playwright's sync API keeps an event loop running in the main thread, where asyncio.run() is refused.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
