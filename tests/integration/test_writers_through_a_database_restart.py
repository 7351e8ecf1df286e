"""The relay's background writers (the transcript tap, the diagnostics timeline) keep what they hold while
PostgreSQL restarts, and write it once the server is back: nothing is dropped, nothing written twice.

A throwaway PostgreSQL of this test's own (Debian's initdb, a free port), so stopping it touches nobody else.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from deploy.faults.services import ThrowawayPostgres, _postgres_bin
from server.conversations.timeline import TimelineRecorder, events_of
from server.db import Database
from server.migrate import upgrade
from server.security.signing import Signer
from server.transcripts.store import transcript_of
from server.transcripts.tap import TranscriptTap
from tests import factories
from tests.support import TEST_SECRET

try:
    _postgres_bin("initdb")
    HAVE_POSTGRES = shutil.which("runuser") is not None
except RuntimeError:
    HAVE_POSTGRES = False

pytestmark = pytest.mark.skipif(
    not HAVE_POSTGRES, reason="needs Debian's postgresql binaries (initdb, pg_ctl)"
)


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as server:
        asyncio.run(_create_database(server))
        upgrade(server.url)
        yield server


async def _create_database(server: ThrowawayPostgres) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
    try:
        await connection.execute('CREATE DATABASE "faults"')
    finally:
        await connection.close()


def test_tap_and_timeline_hold_their_writes_through_a_postgres_restart(postgres: ThrowawayPostgres) -> None:
    async def scenario() -> None:
        db, signer = Database(postgres.url), Signer(TEST_SECRET.encode())
        tap, timeline = TranscriptTap(db), TimelineRecorder(db)
        try:
            await factories.create_flow(db, "restart")
            conversation_id = (await factories.start_conversation(db, signer, "restart")).id
            tap.line(conversation_id, "Avatar", "Before the restart")
            await tap.flush()

            await asyncio.to_thread(postgres.stop)  # fast shutdown: connections are cut
            tap.line(conversation_id, "User", "Said while the database was away")
            timeline.note(conversation_id, "relay_connect")
            await tap.flush()  # fails, and keeps the lines for the next flush
            await timeline.flush()
            assert sum(tap.dropped.values()) == 0 and sum(timeline.dropped.values()) == 0

            await asyncio.to_thread(postgres.start)
            tap.line(conversation_id, "Avatar", "After the restart")
            await tap.flush()
            await timeline.flush()
            lines = [(entry.role, entry.text) for entry in await transcript_of(db, conversation_id)]
            assert lines == [
                ("Avatar", "Before the restart"),
                ("User", "Said while the database was away"),
                ("Avatar", "After the restart"),
            ]
            assert [event.kind for event in await events_of(db, conversation_id)] == ["relay_connect"]
        finally:
            await tap.stop()
            await timeline.stop()
            await db.dispose()

    asyncio.run(scenario())
