"""Group commit of page transcript batches: concurrent batches share a transaction, each is answered only
after its lines are committed, and one bad batch fails alone (SQLite, then PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from server.conversations.page_token import issue_page_token
from server.db import Database
from server.errors import Conflict, TooLarge
from server.models import TranscriptEntry
from server.security.signing import Signer
from server.settings import Settings
from server.transcripts.ingest import IngestLimits, IngestResult, PageBatch, PageEntry
from server.transcripts.ingest_group import IngestGroup
from tests import factories
from tests.support import run_async

LIMITS = IngestLimits(max_lines=40, max_bytes=64 * 1024)
AT = datetime(2026, 1, 1, tzinfo=UTC)
POISON = "the database refuses this line"


def batch(token: str, seqs: range | list[int], text_of: str = "line {}", final: bool = False) -> PageBatch:
    entries = [PageEntry(seq=n, role="User", text=text_of.format(n), timestamp=AT) for n in seqs]
    return PageBatch(token=token, entries=entries, final=final)


async def page_lines(db: Database, conversation_id: str) -> list[int]:
    async with db.reading() as session:
        rows = await session.scalars(
            select(TranscriptEntry.seq)
            .where(TranscriptEntry.conversation_id == conversation_id, TranscriptEntry.source == "page")
            .order_by(TranscriptEntry.seq)
        )
        return list(rows)


class Commits:
    """Counts the transactions committed on a database's engine."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        event.listen(db.engine.sync_engine, "commit", self._committed)

    def _committed(self, _connection: object) -> None:
        self.count += 1


async def refuse_poison(db: Database) -> None:
    """A trigger that makes the database itself refuse one line's text: a row set that fails to write."""
    async with db.transaction() as session:
        if db.dialect == "postgresql":
            await session.execute(
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.text = '{POISON}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; "
                    "END $$ LANGUAGE plpgsql"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON transcript_entries "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON transcript_entries "
                    f"WHEN NEW.text = '{POISON}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )


def test_concurrent_batches_share_commits_and_each_answer_follows_its_commit(backend: Settings) -> None:
    async def scenario() -> None:
        db, observer = Database(backend.effective_database_url), Database(backend.effective_database_url)
        signer = Signer(backend.secret)
        try:
            started = [await factories.start_conversation(db, signer) for _ in range(6)]
            group = IngestGroup(db, signer, LIMITS, None)
            commits = Commits(db)
            seen_at_answer: dict[tuple[str, int], list[int]] = {}

            async def post(conversation_id: str, token: str, first: int) -> IngestResult:
                result = await group.submit(batch(token, range(first, first + 5)))
                # Answered: another connection must already see the lines (nothing acknowledged is lost).
                seen_at_answer[(conversation_id, first)] = await page_lines(observer, conversation_id)
                return result

            results = await asyncio.gather(
                *(post(c.id, c.token, first) for c in started for first in (1, 6, 11))
            )
            assert commits.count < len(results) / 2  # 18 batches, a few transactions
            assert sorted(r.stored for r in results) == [5] * 18
            for c in started:
                assert await page_lines(observer, c.id) == list(range(1, 16))
            for (conversation_id, first), seqs in seen_at_answer.items():
                assert set(range(first, first + 5)) <= set(seqs), conversation_id
            # Each conversation's answers: every batch lands whole; the last one's highest_seq covers all.
            assert max(r.highest_seq for r in results) == 15
        finally:
            await db.dispose()
            await observer.dispose()

    run_async(scenario)


def test_a_retried_batch_in_the_same_group_is_stored_once(backend: Settings) -> None:
    async def scenario() -> None:
        db = Database(backend.effective_database_url)
        signer = Signer(backend.secret)
        try:
            c = await factories.start_conversation(db, signer)
            group = IngestGroup(db, signer, LIMITS, None)
            results = await asyncio.gather(*(group.submit(batch(c.token, range(1, 4))) for _ in range(3)))
            assert sorted(r.stored for r in results) == [0, 0, 3]
            assert {r.highest_seq for r in results} == {3}
            assert await page_lines(db, c.id) == [1, 2, 3]
        finally:
            await db.dispose()

    run_async(scenario)


def test_refused_batches_fail_alone_and_the_rest_are_stored(backend: Settings) -> None:
    """Over the cap, an ended conversation, a page's first batch (which starts its conversation) and a
    final one, all in one burst: each gets the answer it would get alone."""

    async def scenario() -> None:
        db = Database(backend.effective_database_url)
        signer = Signer(backend.secret)
        try:
            good = [await factories.start_conversation(db, signer) for _ in range(3)]
            full = await factories.start_conversation(db, signer)
            ended = await factories.start_conversation(db, signer)
            await factories.age_conversation(db, ended.id, ended_at=datetime.now(UTC) - timedelta(minutes=3))
            fresh_id, fresh_token = issue_page_token(signer, "demo", None, {}, "http://page", 60)
            closing = await factories.start_conversation(db, signer)
            group = IngestGroup(db, signer, LIMITS, None)
            outcomes = await asyncio.gather(
                *(group.submit(batch(c.token, range(1, 6))) for c in good),
                group.submit(batch(full.token, range(1, LIMITS.max_lines + 2))),
                group.submit(batch(ended.token, [1])),
                group.submit(batch(fresh_token, [1, 2])),
                group.submit(batch(closing.token, [1], final=True)),
                return_exceptions=True,
            )
            *stored, too_long, too_late, first, final = outcomes
            assert [(r.stored, r.highest_seq) for r in stored] == [(5, 5)] * 3  # type: ignore[union-attr]
            assert isinstance(too_long, TooLarge) and too_long.code == "transcript_too_long"
            assert isinstance(too_late, Conflict) and too_late.code == "session_ended"
            assert isinstance(first, IngestResult) and (first.stored, first.status) == (2, "active")
            assert isinstance(final, IngestResult) and final.status == "ended"
            for c in good:
                assert await page_lines(db, c.id) == [1, 2, 3, 4, 5]
            assert await page_lines(db, full.id) == [] and await page_lines(db, ended.id) == []
            assert await page_lines(db, fresh_id) == [1, 2]
        finally:
            await db.dispose()

    run_async(scenario)


def test_a_row_set_the_database_refuses_fails_only_its_own_request(backend: Settings) -> None:
    async def scenario() -> None:
        db = Database(backend.effective_database_url)
        signer = Signer(backend.secret)
        try:
            await refuse_poison(db)
            good = [await factories.start_conversation(db, signer) for _ in range(4)]
            bad = await factories.start_conversation(db, signer)
            group = IngestGroup(db, signer, LIMITS, None)
            outcomes = await asyncio.gather(
                *(group.submit(batch(c.token, range(1, 4))) for c in good[:2]),
                group.submit(batch(bad.token, [1, 2], text_of=POISON)),
                *(group.submit(batch(c.token, range(1, 4))) for c in good[2:]),
                return_exceptions=True,
            )
            assert isinstance(outcomes[2], SQLAlchemyError)
            answered = [(r.stored, r.highest_seq) for r in outcomes if isinstance(r, IngestResult)]
            assert answered == [(3, 3)] * 4
            for c in good:
                assert await page_lines(db, c.id) == [1, 2, 3]
            assert await page_lines(db, bad.id) == []
            async with db.reading() as session:
                total = await session.scalar(select(func.count()).select_from(TranscriptEntry))
            assert total == 12
        finally:
            await db.dispose()

    run_async(scenario)


@pytest.mark.parametrize("stored", [[1, 2, 4]], ids=["with a gap"])
def test_highest_seq_stops_at_a_gap_in_what_is_stored(backend: Settings, stored: list[int]) -> None:
    async def scenario() -> None:
        db = Database(backend.effective_database_url)
        signer = Signer(backend.secret)
        try:
            c = await factories.start_conversation(db, signer)
            group = IngestGroup(db, signer, LIMITS, None)
            first = await group.submit(batch(c.token, stored))
            again = await group.submit(batch(c.token, [4, 5]))
            filled = await group.submit(batch(c.token, [3]))
            assert [(r.stored, r.highest_seq) for r in (first, again, filled)] == [(3, 2), (1, 2), (1, 5)]
        finally:
            await db.dispose()

    run_async(scenario)
