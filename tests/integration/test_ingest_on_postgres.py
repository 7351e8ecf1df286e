"""Idempotent ingest relies on ON CONFLICT DO NOTHING, which each backend spells its own way: PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.conversations.page_token import issue_page_token
from server.db import Database
from server.errors import Conflict
from server.security.signing import Signer
from server.settings import Settings
from server.transcripts.ingest import IngestLimits, PageBatch, PageEntry, ingest_page_batch
from server.transcripts.store import transcript_of
from tests import factories
from tests.support import make_settings, migrated_postgres_database

pytestmark = pytest.mark.postgres
LIMITS = IngestLimits(max_lines=5000, max_bytes=2 * 1024 * 1024)


def test_retried_and_partial_batches_on_postgres(tmp_path: Path) -> None:
    with migrated_postgres_database() as url:
        asyncio.run(scenario(make_settings(tmp_path, database_url=url)))


async def scenario(settings: Settings) -> None:
    signer = Signer(settings.secret)
    db = Database(settings.effective_database_url)
    try:
        await factories.create_flow(db, "f")
        conversation_id, token = issue_page_token(signer, "f", None, {}, "http://page", 60)
        at = datetime(2026, 1, 1, tzinfo=UTC)
        lines = [PageEntry(seq=n, role="Avatar", text=f"line {n}", timestamp=at) for n in (1, 2, 4)]
        first = await ingest_page_batch(db, signer, PageBatch(token=token, entries=lines), LIMITS)
        again = await ingest_page_batch(db, signer, PageBatch(token=token, entries=lines), LIMITS)
        assert (first.stored, first.highest_seq, again.stored, again.highest_seq) == (3, 2, 0, 2)
        assert [e.text for e in await transcript_of(db, conversation_id)] == ["line 1", "line 2", "line 4"]
        await ingest_page_batch(db, signer, PageBatch(token=token, entries=[], final=True), LIMITS)
        late = PageBatch(token=token, entries=[lines[0].model_copy(update={"seq": 5})])
        assert (await ingest_page_batch(db, signer, late, LIMITS)).stored == 1  # just after the end: kept
        await factories.age_conversation(
            db, conversation_id, ended_at=datetime.now(UTC) - timedelta(minutes=3)
        )
        with pytest.raises(Conflict) as refused:
            await ingest_page_batch(
                db, signer, PageBatch(token=token, entries=[lines[0].model_copy(update={"seq": 9})]), LIMITS
            )
        assert refused.value.code == "session_ended"
    finally:
        await db.dispose()
