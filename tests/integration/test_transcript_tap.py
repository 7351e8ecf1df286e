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


def test_the_relay_stores_at_most_the_capped_lines_and_bytes_of_a_conversation(backend: Settings) -> None:
    async def scenario() -> None:
        db, signer = Database(backend.effective_database_url), Signer(backend.secret)
        tap = TranscriptTap(db, max_lines=3, max_bytes=64 * 1024)
        try:
            await factories.create_flow(db, "tap")
            chatty, wordy = [(await factories.start_conversation(db, signer, "tap")).id for _ in range(2)]
            for n in range(1, 6):
                tap.line(chatty, "User", f"line {n}")
            for _ in range(4):  # 20,000 bytes each: the fourth would pass 64 KiB
                tap.line(wordy, "User", "é" * 10_000)
            await tap.flush()
            assert await texts(backend, chatty) == ["line 1", "line 2", "line 3"]
            assert len(await texts(backend, wordy)) == 3
            assert tap.dropped["over_cap"] == 3
            restarted = TranscriptTap(db, max_lines=3, max_bytes=64 * 1024)  # the count survives a restart
            restarted.line(chatty, "User", "line 6")
            await restarted.flush()
            assert restarted.dropped["over_cap"] == 1
        finally:
            await tap.stop()
            await db.dispose()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_line_the_database_refuses_is_dropped_alone(tmp_path: Path) -> None:
    """PostgreSQL enforces the role column's length: a line it refuses costs only itself."""

    async def scenario(settings: Settings) -> None:
        db, signer = Database(settings.effective_database_url), Signer(settings.secret)
        tap = TranscriptTap(db)
        try:
            await factories.create_flow(db, "tap")
            one, other = [(await factories.start_conversation(db, signer, "tap")).id for _ in range(2)]
            tap.line(one, "User", "before")
            tap.line(one, "R" * 40, "refused")
            tap.line(one, "Avatar", "after")
            tap.line(other, "User", "elsewhere")
            await tap.flush()
            assert await texts(settings, one) == ["before", "after"]
            assert await texts(settings, other) == ["elsewhere"]
            assert dict(tap.dropped) == {"rejected": 1}
        finally:
            await tap.stop()
            await db.dispose()

    with migrated_postgres_database() as url:
        asyncio.run(scenario(make_settings(tmp_path, database_url=url)))


def test_the_tap_stores_nothing_for_a_flow_with_transcript_recording_off(backend: Settings) -> None:
    async def scenario() -> None:
        db, signer = Database(backend.effective_database_url), Signer(backend.secret)
        tap = TranscriptTap(db)
        try:
            await factories.create_flow(db, "private", sdk_options={"record_transcript": False})
            await factories.create_flow(db, "open")
            private = (await factories.start_conversation(db, signer, "private")).id
            public = (await factories.start_conversation(db, signer, "open")).id
            tap.line(private, "User", "my card number is 4111")
            tap.line(public, "User", "hello")
            tap.ended(private, "upstream_ended")
            await tap.flush()
            assert await texts(backend, private) == []
            assert await texts(backend, public) == ["hello"]
            assert tap.dropped["not_recorded"] == 1
        finally:
            await tap.stop()
            await db.dispose()

    asyncio.run(scenario())
