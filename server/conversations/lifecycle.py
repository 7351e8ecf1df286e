"""Every change of a conversation's status: start, activity, end, idle expiry, retention purge, erasure.

Functions taking an `AsyncSession` work inside a caller's transaction (other services compose them); the
ones taking a `Database` are whole operations with their own transaction, committed before they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.conversations.page_token import PageClaims, read_page_token
from server.db import Database, insert_ignoring_conflicts
from server.dpp.render import DppError, render_for_visitor
from server.errors import Conflict, Forbidden, NotFound, Unavailable
from server.models import (
    Conversation,
    ConversationEvent,
    ConversationStatus,
    DppTemplateVersion,
    ErasedConversation,
    Flow,
    TranscriptEntry,
    utcnow,
)
from server.security.signing import Signer

ACTIVE, ENDED = ConversationStatus.ACTIVE, ConversationStatus.ENDED
ENDED_SENTENCE = "This conversation has ended. Reload the page to start a new one."
# What the visitor reads when the relay stops a conversation (or refuses one) for a budget or an operator; the
# SDK reconnects after the cut and the page shows the refusal's message (see server.relay.budgets).
STOP_SENTENCES = {
    "budget_duration": "This conversation reached its time limit. Reload the page to start a new one.",
    "budget_idle": "This conversation was closed after a long silence. Reload the page to start a new one.",
    "budget_minutes": "This avatar has used up today's conversation time. Please come back tomorrow.",
    "budget_concurrent": "This avatar is in as many conversations as it can hold. Please try again in a few"
    " minutes.",
    "kill_switch": "This avatar is switched off for now. Please try again later.",
    "ended_by_operator": "This conversation was ended by the site's operator. Reload the page to start a new"
    " one.",
}
# Refusals that end nothing (the visitor's other conversations go on), at a connect or a page's admission.
REFUSAL_SENTENCES = {
    **STOP_SENTENCES,
    "per_address": "Too many conversations are open from your network. End one, then try again.",
}


@dataclass(frozen=True)
class PageConversation:
    """What a page token stands for: its flow, and its conversation once started (None before)."""

    claims: PageClaims
    flow: Flow
    conversation: Conversation | None


async def resolve_page_token(
    session: AsyncSession,
    signer: Signer,
    token: str,
    *,
    flow_slug: str | None = None,
    start: bool = True,
    late_lines: bool = False,
) -> PageConversation:
    """Verify a page token and load what it stands for, starting the conversation when `start` is set.

    Refuses a token of another flow (when `flow_slug` is given) and a deleted flow. A disabled flow starts
    nothing, and a started conversation on it or one that has ended is refused too, unless `late_lines`: the
    page's transcript of a conversation that was under way still lands.
    """
    claims = read_page_token(signer, token)
    if flow_slug is not None and claims.flow_slug != flow_slug:
        raise Forbidden("wrong_flow", "This page's session belongs to another avatar. Reload the page.")
    flow = await session.scalar(select(Flow).where(Flow.slug == claims.flow_slug))
    if flow is None:
        raise NotFound("flow_unavailable", "This avatar is no longer available.")
    conversation = await session.get(Conversation, claims.conversation_id)
    if conversation is None:
        if await session.get(ErasedConversation, claims.conversation_id) is not None:
            raise Conflict(
                "conversation_erased", "This conversation was erased. Reload the page to start a new one."
            )
        if not flow.enabled:
            raise NotFound("flow_unavailable", "This avatar is no longer available.")
        if start:
            conversation = await _start(session, flow, claims)
    elif conversation.flow_id != flow.id:
        raise Forbidden("wrong_flow", "This page's session belongs to another avatar. Reload the page.")
    elif not late_lines:
        if not flow.enabled:
            raise NotFound("flow_unavailable", "This avatar is no longer available.")
        if conversation.status == ENDED:
            sentence = STOP_SENTENCES.get(conversation.end_reason or "", ENDED_SENTENCE)
            raise Conflict("conversation_ended", sentence)
    return PageConversation(claims, flow, conversation)


async def _start(session: AsyncSession, flow: Flow, claims: PageClaims) -> Conversation:
    """Write the conversation row; two instances starting it at once write it once."""
    version = (
        await session.get(DppTemplateVersion, claims.template_version_id)
        if claims.template_version_id is not None
        else None
    )
    dpp = None
    if version is not None:
        try:
            dpp = await render_for_visitor(
                version.body,
                visitor=claims.visitor,
                flow_slug=flow.slug,
                flow_name=flow.display_name,
                page_url=claims.page_url,
                variables=version.variables,
            )
        except DppError as exc:
            raise Unavailable(
                "dpp_failed", f"This avatar page is misconfigured: its prompt template failed ({exc})."
            ) from None
    now = utcnow()
    row = {
        "id": claims.conversation_id,
        "flow_id": flow.id,
        "template_version_id": version.id if version else None,
        "rendered_dpp": dpp,
        "visitor_context": claims.visitor,
        "preview": claims.preview,
        "status": ACTIVE,
        "created_at": now,
        "last_activity_at": now,
    }
    dialect = session.get_bind().dialect.name
    await session.execute(insert_ignoring_conflicts(dialect, Conversation, [row], ["id"]))
    conversation = await session.get(Conversation, claims.conversation_id, populate_existing=True)
    assert conversation is not None  # inserted above, or by whoever won the race
    return conversation


async def join(db: Database, signer: Signer, token: str, flow_slug: str) -> PageConversation:
    """The relay's connect: resolve the token and start the conversation (committed before relaying).

    Only a Socket-mode flow's conversations are relayed: an Iframe-mode flow's meeting talks to the service
    from its frame, and its page token must not open relayed sessions beside it (refused, nothing started)."""
    async with db.transaction() as session:
        page = await resolve_page_token(session, signer, token, flow_slug=flow_slug)
        if page.flow.sdk_mode != "socket":
            raise Conflict("not_socket_mode", "This avatar runs in a frame on its page. Reload the page.")
        return page


async def check_page_token(db: Database, signer: Signer, token: str, flow_slug: str) -> PageConversation:
    """For requests that need a live page token without starting anything (the Iframe SDK's assets)."""
    async with db.reading() as session:
        return await resolve_page_token(session, signer, token, flow_slug=flow_slug, start=False)


async def require_active(db: Database, conversation_id: str) -> None:
    """For what a conversation hands out (WHEP ids): refuse it once the conversation ended or was erased."""
    async with db.reading() as session:
        status = await session.scalar(select(Conversation.status).where(Conversation.id == conversation_id))
    if status is None:
        raise NotFound("unknown_session", "this conversation does not exist (any more)")
    if status != ACTIVE:
        raise Conflict("conversation_ended", "this conversation has ended")


async def record_page_context(db: Database, conversation_id: str, message: str, when: datetime) -> None:
    """Keep what a page sent as live context (flows that allow it), beside the server-rendered DPP."""
    async with db.transaction() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is not None:
            sent = [*(conversation.page_contexts or []), {"at": when.isoformat(), "message": message}]
            conversation.page_contexts = sent  # a new list: JSON columns track assignment, not mutation


def record_activity(conversation: Conversation, when: datetime) -> None:
    if conversation.status == ACTIVE:
        conversation.last_activity_at = when


def end(conversation: Conversation, reason: str, when: datetime) -> None:
    """End a conversation once; the first reason stays."""
    if conversation.status != ENDED:
        conversation.status = ENDED
        conversation.end_reason = reason
        conversation.ended_at = when


async def record_activity_of(session: AsyncSession, ids: set[str], when: datetime) -> None:
    if ids:
        await session.execute(
            update(Conversation)
            .where(Conversation.id.in_(ids), Conversation.status == ACTIVE)
            .values(last_activity_at=when)
        )


async def end_by_id(session: AsyncSession, reasons: dict[str, str], when: datetime) -> None:
    for conversation_id, reason in reasons.items():
        conversation = await session.get(Conversation, conversation_id)
        if conversation is not None:
            end(conversation, reason, when)


async def expire_idle(db: Database, now: datetime, idle_after: timedelta) -> int:
    """End conversations with no activity for `idle_after`; returns how many."""
    async with db.transaction() as session:
        ended = await session.execute(
            update(Conversation)
            .where(Conversation.status == ACTIVE, Conversation.last_activity_at < now - idle_after)
            .values(status=ENDED, end_reason="idle_timeout", ended_at=now)
            .returning(Conversation.id)
        )
        ids = list(ended.scalars())
        # On each diagnostics timeline (its last slot is kept for the end).
        session.add_all(
            ConversationEvent(conversation_id=i, at=now, kind="end", detail={"reason": "idle_timeout"})
            for i in ids
        )
    return len(ids)


async def purge_by_retention(db: Database, now: datetime) -> int:
    """Delete conversations older than their flow's retention, with their transcripts; returns how many."""
    purged = 0
    async with db.transaction() as session:
        flows = (
            await session.execute(
                select(Flow.id, Flow.retention_days).where(Flow.retention_days.is_not(None))
            )
        ).all()
        for flow_id, days in flows:
            old = select(Conversation.id).where(
                Conversation.flow_id == flow_id, Conversation.created_at < now - timedelta(days=days or 0)
            )
            ids = list((await session.execute(old)).scalars())
            if ids:
                await _delete(session, ids)
                purged += len(ids)
    return purged


async def erase(db: Database, conversation_id: str) -> None:
    """Delete a conversation and every transcript line of it (right to erasure).

    Its id is remembered (nothing else) so the page that held it, still open, cannot start it again."""
    async with db.transaction() as session:
        await erase_in(session, conversation_id)


async def erase_in(session: AsyncSession, conversation_id: str) -> None:
    """`erase` inside the caller's transaction (the console audits it in the same one)."""
    if await session.get(Conversation, conversation_id) is None:
        raise NotFound("unknown_session", f"no session with id {conversation_id!r}")
    await _delete(session, [conversation_id])
    session.add(ErasedConversation(id=conversation_id, erased_at=utcnow()))


async def forget_erased(db: Database, now: datetime, after: timedelta) -> int:
    """Forget erased ids older than `after` (a page token's lifetime: no token naming them is valid)."""
    async with db.transaction() as session:
        result = await session.execute(
            delete(ErasedConversation).where(ErasedConversation.erased_at < now - after)
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _delete(session: AsyncSession, ids: list[str]) -> None:
    await session.execute(delete(TranscriptEntry).where(TranscriptEntry.conversation_id.in_(ids)))
    await session.execute(delete(Conversation).where(Conversation.id.in_(ids)))
