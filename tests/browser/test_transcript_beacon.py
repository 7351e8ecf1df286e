"""Closing the tab loses no transcript line the page already showed: the page flushes with sendBeacon."""

from __future__ import annotations

from playwright.sync_api import BrowserContext
from sqlalchemy import select

from server.models import Conversation, TranscriptEntry
from server.settings import Settings
from tests.support import ServerThread, db_session, eventually, run_async

ADD_LINES = """async () => {
  const { TranscriptSender } = await import('/static/js/transcript-sender.js');
  const config = JSON.parse(document.getElementById('avatar-config').textContent);
  const sender = new TranscriptSender(config.session.token);
  sender.watchPageLifecycle();
  sender.add('Avatar', 'Hello! How can I help?');
  sender.add('User', 'Show me a chart, please');
  return config.session.id;
}"""


def stored(settings: Settings, session_id: str) -> tuple[list[tuple[int, str, str]], str | None]:
    """The lines and status of the conversation; (no lines, None) until its first line starts it."""

    async def read() -> tuple[list[tuple[int, str, str]], str | None]:
        async with db_session(settings) as db:
            rows = (
                await db.execute(
                    select(TranscriptEntry.seq, TranscriptEntry.role, TranscriptEntry.text)
                    .where(TranscriptEntry.conversation_id == session_id)
                    .order_by(TranscriptEntry.seq)
                )
            ).all()
            status = (
                await db.execute(select(Conversation.status).where(Conversation.id == session_id))
            ).scalar_one_or_none()
            return [(r[0], r[1], r[2]) for r in rows], status

    return run_async(read)


def test_closing_the_tab_flushes_pending_lines(
    live_server: ServerThread, settings: Settings, context: BrowserContext
) -> None:
    # Only this test's sender: the page's own would send its own final (empty) beacon, and whichever final
    # arrived first ended the session, so the other one's lines were refused as late.
    context.route("**/static/js/socket-page.js", lambda route: route.abort())
    page = context.new_page()
    page.goto(f"{live_server.url}/a/demo")
    session_id = page.evaluate(ADD_LINES)
    page.close(run_before_unload=True)  # well before the 1 s batching delay: only the beacon can save them
    lines, status = eventually(
        lambda: stored(settings, session_id),
        lambda found: len(found[0]) >= 2 and found[1] == "ended",
        interval=0.2,
        what="the beacon's lines and final",
    )
    assert lines == [(1, "Avatar", "Hello! How can I help?"), (2, "User", "Show me a chart, please")]
    assert status == "ended"
