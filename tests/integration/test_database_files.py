"""The SQLite database holds transcripts: its files are readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from server.db import Database
from tests.support import run_async


def modes(directory: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}


def test_database_wal_and_shm_are_created_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, which would make them 0644
    try:

        async def write_and_look() -> dict[str, int]:
            db = Database(f"sqlite+aiosqlite:///{tmp_path / 'avatar.db'}")
            try:
                async with db.transaction() as session:
                    await session.execute(text("CREATE TABLE t (x TEXT)"))
                    await session.execute(text("INSERT INTO t VALUES ('personal')"))
                return modes(tmp_path)  # while the engine is open, WAL and SHM exist
            finally:
                await db.dispose()

        seen = run_async(write_and_look)
    finally:
        os.umask(previous)
    assert seen == {"avatar.db": 0o600, "avatar.db-wal": 0o600, "avatar.db-shm": 0o600}


def test_an_existing_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "avatar.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    run_async(lambda: Database(f"sqlite+aiosqlite:///{path}").dispose())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
