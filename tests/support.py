"""Test support: settings in a temp dir, real servers on loopback ports, databases migrated once per run."""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from server import migrate
from server.db import Database
from server.errors import NotFound
from server.flows import demo_document, import_document
from server.relay.browser_websocket import WS_PROTOCOL
from server.settings import Settings, load_settings
from server.transcripts.merge import CanonicalEntry
from server.transcripts.store import transcript_of

T = TypeVar("T")
TEST_SECRET = "test-secret-" + "x" * 40
DATABASE_FILE = "avatar-bff.db"  # where settings put the SQLite database inside their data dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _always(value: object) -> bool:
    return bool(value)


def eventually(
    condition: Callable[[], T],
    until: Callable[[T], bool] = _always,
    *,
    timeout: float = 10,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call `condition` until `until` accepts its value (truthy by default); returns that value.

    Fails after `timeout` seconds naming the last value seen (or the last exception raised): a test waits as
    long as the thing takes, never a fixed guess.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception as exc:  # not there yet (a server still starting, a row not written)
            last = f"raised {exc!r}"
        else:
            if until(value):
                return value
            last = f"was {value!r}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s: the last value {last}")
        time.sleep(interval)


@overload
async def eventually_async(
    condition: Callable[[], Awaitable[T]],
    until: Callable[[T], bool] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually_async(
    condition: Callable[[], T],
    until: Callable[[T], bool] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually_async(
    condition: Callable[[], Any],
    until: Callable[[Any], bool] = _always,
    *,
    timeout: float = 10,
    interval: float = 0.05,
    what: str = "the condition",
) -> Any:
    """`eventually` for async tests: the event loop keeps running between polls; `condition` may be async."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            last = f"raised {exc!r}"
        else:
            if until(value):
                return value
            last = f"was {value!r}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s: the last value {last}")
        await asyncio.sleep(interval)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a server started as a process the way an operator would (SIGTERM), so it stops what it started
    (`serve --demo` its simulator); killed only if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def wait_until_up(url: str, timeout: float = 20) -> httpx.Response:
    """The first answer of a server started in another process at `url`."""
    return eventually(
        lambda: httpx.get(url, timeout=1), timeout=timeout, interval=0.1, what=f"{url} answering"
    )


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "dev",
        "data_dir": data_dir,
        "secret_key": TEST_SECRET,
        "simulator_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there unless a test starts it
        # AVATAR_BFF_REDIS_URL names the test Redis (.ci/run sets it), the same name as the app's setting:
        # a test app shares state through Redis only when its test asks for it.
        "redis_url": "",
        # Every test client is 127.0.0.1: the per-address cap is tested where a test sets it.
        "relay_max_per_address": 1000,
    }
    values.update(overrides)
    return load_settings(**values)


class ServerThread:
    """Runs an ASGI app under uvicorn in a background thread, like production but on a free port.

    Starting fails when the server does not listen within `start_timeout`, stopping when it is still running
    after `stop_timeout`: a server left behind would hold its port and answer the next test.
    """

    def __init__(
        self, app: Any, port: int | None = None, start_timeout: float = 15, stop_timeout: float = 10
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws=WS_PROTOCOL,  # the WebSocket protocol `serve` runs
            timeout_graceful_shutdown=max(int(stop_timeout) - 3, 1),  # like `serve`: a stop is bounded
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._ended_with: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # uvicorn exits with SystemExit when it cannot bind or start the app
            self._ended_with = exc

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"test server on {self.url} stopped before it listened: {self._why()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"test server on {self.url} did not listen within {self.start_timeout} s")
            time.sleep(0.02)
        return self

    def _why(self) -> str:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {self.port} is already in use"
        ended = self._ended_with
        if isinstance(ended, SystemExit):
            return f"uvicorn exited with code {ended.code} (its log above says why)"
        return repr(ended) if ended is not None else "no error was raised (see its log above)"

    def stop(self) -> None:
        """Ask uvicorn to shut down and wait for it; raise if it is still running after `stop_timeout`."""
        self.server.should_exit = True
        self.thread.join(timeout=self.stop_timeout)
        if self.thread.is_alive():
            self.server.force_exit = True  # skip what it was waiting for, so it ends soon after the test
            raise RuntimeError(
                f"test server on {self.url} did not stop within {self.stop_timeout} s "
                "(a connection, task or lifespan shutdown still running)"
            )

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Databases: migrated and seeded once per run, copied for each test.

_lock = threading.Lock()
_template_dir: Path | None = None
_sqlite_template: Path | None = None
_postgres_template: str | None = None


def use_template_dir(directory: Path | None) -> None:
    """Where this run keeps its template databases (set by the suite's conftest)."""
    global _template_dir, _sqlite_template
    _template_dir, _sqlite_template = directory, None


def _in_own_thread(work: Callable[[], T]) -> T:
    # Playwright's sync API keeps an event loop running in the main thread, where asyncio.run() is refused.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()


async def seed_demo(settings: Settings) -> None:
    db = Database(settings.effective_database_url)
    try:
        await import_document(db, demo_document(), settings.allowed_upstream_hosts)
    finally:
        await db.dispose()


def _sqlite_template_file() -> Path:
    """A migrated SQLite database with the demo flows, built on first use; one file, no WAL beside it."""
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            if _template_dir is None:
                raise RuntimeError("no template directory: tests/conftest.py sets it for the session")
            settings = make_settings(_template_dir / "sqlite")
            _in_own_thread(lambda: migrate.upgrade(settings.effective_database_url))
            _in_own_thread(lambda: asyncio.run(seed_demo(settings)))
            path = settings.data_dir / DATABASE_FILE
            # Every engine is disposed: fold the WAL into the main file and leave WAL mode, so the file alone
            # is the whole database (the app turns WAL back on in each copy).
            connection = sqlite3.connect(path)
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                connection.execute("PRAGMA journal_mode=DELETE")
            finally:
                connection.close()
            _sqlite_template = path
        return _sqlite_template


def prepared_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Dev settings on a migrated SQLite database in data_dir with the demo flows: the template, copied."""
    settings = make_settings(data_dir, **overrides)
    target = settings.data_dir / DATABASE_FILE
    if settings.effective_database_url != f"sqlite+aiosqlite:///{target}":
        raise ValueError("prepared_settings copies a SQLite database into data_dir; do not set database_url")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template_file(), target)
    return settings


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    parsed = make_url(url).set(drivername="postgresql")
    connection = await asyncpg.connect(parsed.render_as_string(hide_password=False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _database_url(name: str) -> str:
    base = os.environ["AVATAR_BFF_TEST_DATABASE_URL"]
    return make_url(base).set(database=name).render_as_string(hide_password=False)


@contextmanager
def _new_postgres_database(template: str | None) -> Iterator[str]:
    base = os.environ["AVATAR_BFF_TEST_DATABASE_URL"]
    name = f"abff_{uuid.uuid4().hex[:12]}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"{copy_of}'))
    try:
        yield _database_url(name)
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the server named by AVATAR_BFF_TEST_DATABASE_URL, dropped afterwards."""
    with _new_postgres_database(None) as url:
        yield url


def _postgres_template_name() -> str:
    """A database migrated once per run, for CREATE DATABASE … TEMPLATE (nobody may stay connected to it)."""
    global _postgres_template
    with _lock:
        if _postgres_template is None:
            name = f"abff_template_{uuid.uuid4().hex[:12]}"
            asyncio.run(_admin(os.environ["AVATAR_BFF_TEST_DATABASE_URL"], f'CREATE DATABASE "{name}"'))
            _postgres_template = name  # dropped at the end of the run even when migrating fails
            migrate.upgrade(_database_url(name))
        return _postgres_template


@contextmanager
def migrated_postgres_database() -> Iterator[str]:
    """A new database at the newest migration (a copy of the run's template), dropped afterwards."""
    with _new_postgres_database(_postgres_template_name()) as url:
        yield url


def drop_postgres_template() -> None:
    global _postgres_template
    with _lock:
        if _postgres_template is not None:
            base = os.environ["AVATAR_BFF_TEST_DATABASE_URL"]
            asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{_postgres_template}" WITH (FORCE)'))
            _postgres_template = None


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Database]:
    """The test database as services see it (its own engine, disposed afterwards)."""
    db = Database(settings.effective_database_url)
    try:
        yield db
    finally:
        await db.dispose()


def with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on the test database from sync test code, e.g. a factory: `with_database(s, f)`."""

    async def run() -> T:
        async with database(settings) as db:
            return await work(db)

    return run_async(run)


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


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync test code, in a thread of its own.

    Playwright's sync API keeps an event loop running in the main thread, where asyncio.run() is refused.
    """
    return _in_own_thread(lambda: asyncio.run(factory()))
