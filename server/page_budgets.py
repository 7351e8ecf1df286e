"""Session budgets and kill switches for Iframe-mode pages: the page asks, we answer, the page enforces.

An Iframe SDK meeting talks to the avatar service directly, so the relay never sees it. What we do see is the
page we serve, and it asks us: before it loads the meeting (`admit`), every `heartbeat_seconds` while it runs
(`beat`) and when its call ends (`end`). Each answer says go on or stop, with the reason's sentence from
`REFUSAL_SENTENCES`. The usage is kept in the relay's shared-state keys (`server.budgets`), so socket and
iframe conversations of a flow count against one cap and one day's minutes, and a client address's
conversations of either mode against one cap (`relay_max_per_address`, `budgets.address_key`): the address is
the request's, so a page that changes network renews under its new one while the old slot's lease runs out.
Someone who embeds the vendor's iframe without our page is out of reach of all this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import budgets
from server.budgets import Budgets, FlowBudget
from server.conversations import lifecycle, timeline
from server.conversations.lifecycle import ENDED_SENTENCE, REFUSAL_SENTENCES
from server.conversations.page_token import PageClaims, read_page_token
from server.conversations.timeline import TimelineRecorder
from server.db import Database
from server.errors import AppError, Conflict
from server.models import Conversation, ConversationStatus, TranscriptEntry, utcnow
from server.sdk_options import stored_options
from server.security.signing import Signer
from server.shared_state import SharedState

log = logging.getLogger("avatar_bff.budgets")
# The relay checks its bridges every budget_check_seconds at the cost of a loop iteration; a page's beat is an
# HTTP request and a database read per live conversation, so pages beat this many times less often (10 s at
# the default 2 s), and never less often than MAX_HEARTBEAT_SECONDS: a kill switch reaches a page within one
# beat plus one check.
HEARTBEAT_CHECKS = 5
MAX_HEARTBEAT_SECONDS = 15.0
LEASE_BEATS = 3  # a page's slot outlives two lost beats; a closed tab's comes free after this many
BEATS_PER_INTERVAL = 3  # requests a page may make per heartbeat interval (admit, beats, end), after a burst
BURST = 10


def heartbeat_interval(check_seconds: float) -> float:
    return min(MAX_HEARTBEAT_SECONDS, check_seconds * HEARTBEAT_CHECKS)


def clock_key(conversation_id: str) -> str:
    """When a page's conversation time was last counted (seconds since the epoch, as a counter's total)."""
    return f"budget:page-clock:{conversation_id}"


def heard_key(conversation_id: str) -> str:
    """When a beat last found a new line of the visitor's (seconds since the epoch, as a counter's total)."""
    return f"budget:page-heard:{conversation_id}"


def lines_key(conversation_id: str) -> str:
    """How many of the visitor's lines the last beat found stored."""
    return f"budget:page-lines:{conversation_id}"


@dataclass(frozen=True)
class Verdict:
    go: bool
    reason: str | None = None  # why not: a key of REFUSAL_SENTENCES (or an ended conversation's end reason)
    message: str | None = None  # what the visitor reads


GO = Verdict(True)


def stop(reason: str) -> Verdict:
    return Verdict(False, reason, REFUSAL_SENTENCES.get(reason, ENDED_SENTENCE))


class PageBudgets:
    """One per process; every instance answers any page the same way from the shared state."""

    def __init__(
        self,
        db: Database,
        signer: Signer,
        shared: SharedState,
        recorder: TimelineRecorder,
        check_seconds: float,
        max_per_address: int,
    ) -> None:
        self.db, self.signer, self.shared, self.recorder = db, signer, shared, recorder
        self.check_seconds = check_seconds
        self.max_per_address = max_per_address
        self.heartbeat_seconds = heartbeat_interval(check_seconds)
        self.lease = self.heartbeat_seconds * LEASE_BEATS
        self._budgets: Budgets = budgets.NO_BUDGETS
        self._read_at = -float("inf")
        self._reading = asyncio.Lock()

    async def limit(self, claims: PageClaims) -> float:
        """Take one request from the conversation's bucket: 0, or the seconds to wait."""
        return await self.shared.take(
            f"page-budget:{claims.conversation_id}",
            rate=BEATS_PER_INTERVAL / self.heartbeat_seconds,
            burst=BURST,
        )

    def claims(self, token: str) -> PageClaims:
        return read_page_token(self.signer, token)  # Unauthenticated (401) naming why, for a bad token

    async def current(self) -> Budgets:
        """Budgets and switches as read at most `check_seconds` ago: as fresh as the relay's (the last ones
        read while the database does not answer)."""
        async with self._reading:
            if time.monotonic() - self._read_at >= self.check_seconds:
                try:
                    self._budgets = await budgets.load(self.db)
                except Exception as exc:
                    log.warning("budgets: could not be read for a page (%s)", type(exc).__name__)
                self._read_at = time.monotonic()
        return self._budgets

    async def _budget_of(self, slug: str) -> tuple[Budgets, FlowBudget | None]:
        state = await self.current()
        budget = state.flows.get(slug)
        if budget is None:  # a flow created since the last read
            budget = await budgets.flow_budget(self.db, slug)
        if budget is not None and budget.sdk_mode != "iframe":
            # The relay holds, counts and frees a Socket-mode conversation's slot: a page must not hold one
            # with cheap HTTP beats, nor free the relay's.
            raise Conflict(
                "not_iframe_mode",
                "This avatar's conversations go through the relay, which applies its budgets.",
            )
        return state, budget

    async def admit(self, claims: PageClaims, token: str, address: str) -> Verdict:
        """Before the page loads the meeting: refused, or its slots held and its conversation started.
        `address` is the client's (empty: unknown, not capped)."""
        state, budget = await self._budget_of(claims.flow_slug)
        refusal = await self._refusal(state, budget, claims.conversation_id, address)
        if refusal is not None:
            self.recorder.refused(claims.conversation_id, claims.flow_slug, refusal)
            return stop(refusal)
        try:
            async with self.db.transaction() as session:
                page = await lifecycle.resolve_page_token(session, self.signer, token)
                assert page.conversation is not None  # started, or a refusal raised
                await timeline.record(session, page.conversation.id, "page_admitted", {})
        except AppError:  # ended, erased, the flow gone: the slots held above come free at once
            await self._let_go(budget, claims.conversation_id, address)
            raise
        # Time is counted from here; a Retry of the same conversation does not count the pause before it.
        await self._set_clock(clock_key(claims.conversation_id))
        await self._set_clock(heard_key(claims.conversation_id))  # a Start or Retry is the visitor's doing
        return GO

    async def _refusal(
        self, state: Budgets, budget: FlowBudget | None, conversation_id: str, address: str
    ) -> str | None:
        if state.all_killed or (budget is not None and budget.killed):
            return "kill_switch"
        if budget is None:
            return None  # an unknown flow: starting the conversation refuses it with its own reason
        try:
            if budget.minutes_per_day is not None:
                used = await self.shared.total(budgets.seconds_key(budget.flow_id, budgets.today()))
                if used >= budget.minutes_per_day * 60:
                    return "budget_minutes"
            if not await self._hold_address(address, conversation_id):
                return "per_address"
            if budget.max_concurrent is not None and not await self.shared.hold(
                budgets.live_key(budget.flow_id),
                conversation_id,
                limit=budget.max_concurrent,
                lease_seconds=self.lease,
            ):
                await self._let_go(None, conversation_id, address)  # the address's slot, held just above
                return "budget_concurrent"
        except Exception as exc:  # shared state failing: budgets fail open, as at the relay
            log.warning("budgets: shared state failed at a page's admission (%s)", type(exc).__name__)
        return None

    async def beat(self, claims: PageClaims, token: str, address: str) -> Verdict:
        """A live page's heartbeat: its time counted, its slots renewed, or the reason it must stop."""
        state, budget = await self._budget_of(claims.flow_slug)
        async with self.db.reading() as session:
            page = await lifecycle.resolve_page_token(
                session, self.signer, token, start=False, late_lines=True
            )
            conversation = page.conversation
            if conversation is None:
                raise Conflict("not_admitted", "This conversation was not started here. Reload the page.")
            idle_cut = budget is not None and budget.idle_cut_seconds is not None
            recording = stored_options(page.flow.sdk_options).record_transcript
            lines = await self._visitor_lines(session, conversation.id) if idle_cut and recording else None
        if conversation.status == ConversationStatus.ENDED:  # an operator ended it, or an earlier stop
            await self._let_go(budget, conversation.id, address)
            return stop(conversation.end_reason or "")
        if budget is None:
            return GO
        used = await self._count(budget, conversation.id)
        silent = None if lines is None else await self._silent_for(conversation, lines)
        reason = self._over(state, budget, conversation, used, silent)
        if reason is not None:
            await self._stop(budget, conversation.id, reason, address)
            return stop(reason)
        # A renewal refused (the lease lapsed and others took the slots) stops nothing, as at the relay.
        with contextlib.suppress(Exception):
            if budget.max_concurrent is not None:
                await self.shared.hold(
                    budgets.live_key(budget.flow_id),
                    conversation.id,
                    limit=budget.max_concurrent,
                    lease_seconds=self.lease,
                )
            await self._hold_address(address, conversation.id)
        return GO

    async def end(self, claims: PageClaims, address: str) -> None:
        """The page's call ended (End, an end phrase, the meeting's own end, the page closing): its time up
        to now is counted and its slots come free at once. The conversation's end is the final transcript
        flush's, with its reason."""
        _state, budget = await self._budget_of(claims.flow_slug)
        if budget is not None:
            await self._count(budget, claims.conversation_id)
        await self._let_go(budget, claims.conversation_id, address)

    def _over(
        self,
        state: Budgets,
        budget: FlowBudget,
        conversation: Conversation,
        used: float | None,
        silent: float | None,
    ) -> str | None:
        if state.all_killed or budget.killed:
            return "kill_switch"
        now = utcnow()
        if (
            budget.max_duration_seconds is not None
            and (now - conversation.created_at).total_seconds() >= budget.max_duration_seconds
        ):
            return "budget_duration"
        if budget.minutes_per_day is not None and used is not None and used >= budget.minutes_per_day * 60:
            return "budget_minutes"
        if budget.idle_cut_seconds is not None and silent is not None and silent >= budget.idle_cut_seconds:
            return "budget_idle"
        return None

    async def _visitor_lines(self, session: AsyncSession, conversation_id: str) -> int:
        """How many lines of the visitor's (spoken or typed) the page has posted; it flushes them before each
        beat. Their timestamps are the visitor's clock: when they arrived is told by the beats instead."""
        count = await session.scalar(
            select(func.count()).where(
                TranscriptEntry.conversation_id == conversation_id,
                TranscriptEntry.source == "page",
                TranscriptEntry.role == "User",
            )
        )
        return int(count or 0)

    async def _silent_for(self, conversation: Conversation, lines: int) -> float | None:
        """Seconds since the visitor was last heard, by our clock: since the beat that found their newest
        line, or the admission; None when shared state fails (no idle cut then)."""
        try:
            seen = await self.shared.total(lines_key(conversation.id))
            if lines > seen:
                await self.shared.add(
                    lines_key(conversation.id), lines - seen, ttl_seconds=budgets.DAY_TTL_SECONDS
                )
                await self._set_clock(heard_key(conversation.id))
            heard = await self.shared.total(heard_key(conversation.id))
        except Exception:
            return None
        if not heard:  # admitted before shared state lost it: from the conversation's start
            return (utcnow() - conversation.created_at).total_seconds()
        return time.time() - heard

    async def _count(self, budget: FlowBudget, conversation_id: str) -> float | None:
        """Add the seconds since the page's time was last counted (at most a lease: a page asleep that long
        held no slot) to the flow's day; the day's total, or None when shared state fails."""
        try:
            now = time.time()
            last = await self.shared.total(clock_key(conversation_id))
            await self.shared.add(clock_key(conversation_id), now - last, ttl_seconds=budgets.DAY_TTL_SECONDS)
            spent = min(max(0.0, now - last), self.lease) if last else 0.0
            day = budgets.today(datetime.fromtimestamp(now, UTC))
            return await self.shared.add(
                budgets.seconds_key(budget.flow_id, day), spent, ttl_seconds=budgets.DAY_TTL_SECONDS
            )
        except Exception as exc:  # fail open: the next beat counts what this one missed (up to a lease)
            log.warning("budgets: shared state failed at a page's heartbeat (%s)", type(exc).__name__)
            return None

    async def _set_clock(self, key: str) -> None:
        """Make the counter `key` read now (seconds since the epoch)."""
        with contextlib.suppress(Exception):
            last = await self.shared.total(key)
            await self.shared.add(key, time.time() - last, ttl_seconds=budgets.DAY_TTL_SECONDS)

    async def _stop(self, budget: FlowBudget, conversation_id: str, reason: str, address: str) -> None:
        """The conversation ends for `reason`, durably, before the page hears of it (its lines said before
        this beat are stored: the page flushes them first)."""
        async with self.db.transaction() as session:
            conversation = await session.get(Conversation, conversation_id, with_for_update=True)
            if conversation is not None and conversation.status == ConversationStatus.ACTIVE:
                lifecycle.end(conversation, reason, utcnow())
                await timeline.record(
                    session, conversation_id, "end", {"reason": reason, "by": "page_budget"}
                )
        await self._let_go(budget, conversation_id, address)

    async def _hold_address(self, address: str, conversation_id: str) -> bool:
        """Hold (or renew) the conversation's slot among its client address's; False when all are held."""
        if not address:
            return True  # no address to group by (a Unix socket without a balancer)
        return await self.shared.hold(
            budgets.address_key(address),
            conversation_id,
            limit=self.max_per_address,
            lease_seconds=self.lease,
        )

    async def _let_go(self, budget: FlowBudget | None, conversation_id: str, address: str) -> None:
        """The conversation's slots come free: its flow's (None: not that one) and its address's."""
        with contextlib.suppress(Exception):  # failing, the leases free them
            if budget is not None and budget.max_concurrent is not None:
                await self.shared.let_go(budgets.live_key(budget.flow_id), conversation_id)
            if address:
                await self.shared.let_go(budgets.address_key(address), conversation_id)
