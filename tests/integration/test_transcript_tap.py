"""The relay's transcript tap: one bad line or one erased conversation never stops the others' lines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.conversations import lifecycle
from server.db import Database
from server.security.signing import Signer
from server.settings import Settings
from server.transcripts.tap import TranscriptTap
from tests import factories
from tests.support import make_settings, migrated_postgres_database, prepared_settings, stored_transcript


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield prepared_settings(tmp_path)
    else:
        with migrated_postgres_database() as url:
            yield make_settings(tmp_path, database_url=url)


async def texts(settings: Settings, conversation_id: str) -> list[str]:
    return [entry.text for entry in await stored_transcript(settings, conversation_id)]


def test_a_nul_from_upstream_is_stripped_and_does_not_block_later_lines(backend: Settings) -> None:
    async def scenario() -> None:
        db, signer = Database(backend.effective_database_url), Signer(backend.secret)
        tap = TranscriptTap(db)
        try:
            await factories.create_flow(db, "tap")
            first, second = [(await factories.start_conversation(db, signer, "tap")).id for _ in range(2)]
            tap.line(first, "User", "I said a\x00b")
            await tap.flush()
            tap.line(second, "Avatar", "Next visitor")
            await tap.flush()
            assert await texts(backend, first) == ["I said ab"]
            assert await texts(backend, second) == ["Next visitor"]
            assert sum(tap.dropped.values()) == 0
        finally:
            await tap.stop()
            await db.dispose()

    asyncio.run(scenario())


def test_lines_of_an_erased_conversation_are_dropped_and_counted_the_rest_stored(backend: Settings) -> None:
    async def scenario() -> None:
        db, signer = Database(backend.effective_database_url), Signer(backend.secret)
        tap = TranscriptTap(db)
        try:
            await factories.create_flow(db, "tap")
            erased, live = [(await factories.start_conversation(db, signer, "tap")).id for _ in range(2)]
            tap.line(erased, "User", "please forget me")
            tap.line(live, "User", "hello")
            tap.ended(erased, "upstream_ended")
            await lifecycle.erase(db, erased)  # DELETE /api/v1/sessions/{id} while the line is queued
            await tap.flush()
            assert await texts(backend, live) == ["hello"]
            assert tap.dropped["conversation_gone"] == 1
            tap.line(live, "Avatar", "still here")  # nothing left behind to poison the next batch
            await tap.flush()
            assert await texts(backend, live) == ["hello", "still here"]
            assert await texts(backend, erased) == []
        finally:
            await tap.stop()
            await db.dispose()

    asyncio.run(scenario())
