"""The relay's side of session budgets and kill switches (what they are: `server.budgets`).

At a connect, `admit` refuses a killed flow, a flow whose minutes of the day are used up, and one over its
conversations-at-once cap; it holds the conversation's slot in shared state (held per conversation, so a
reconnect, on any instance, does not count twice). Every `budget_check_seconds`, `check` re-reads budgets and
switches from the database (so a switch used on any instance is seen everywhere within that interval), adds
each live bridge's relayed seconds to its flow's counter of the day, renews the held slots (an instance that
dies stops renewing, and its slots come back after the lease), and ends the bridges that went over a limit or
whose conversation an operator ended (in case this instance missed that message).

Conversations per client address (`relay_max_per_address`) are slots too, under `budgets.address_key`, which
Iframe-mode pages hold as well: one cap per address for the whole deployment and both modes. The hub holds one
at its connect (`hold_address`), the check renews it with the flow's, and it goes with the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from server import budgets
from server.budgets import NO_BUDGETS, Budgets, FlowBudget
from server.conversations.lifecycle import REFUSAL_SENTENCES
from server.db import Database
from server.errors import AppError
from server.shared_state import SharedState

if TYPE_CHECKING:
    from server.relay.sockets import Bridge

log = logging.getLogger("avatar_bff.relay")
LEASE_CHECKS = 8  # a held slot lives this many checks unless renewed
RENEW_CHECKS = 2  # held slots are renewed every this many checks
PENDING_SECONDS = 60.0  # a slot held for a connect that never became a bridge is let go after this
# Browser events that mean the visitor did something (the rest is the SDK's own signalling).
VISITOR_EVENTS = frozenset(
    [
        "onTextEntered",
        "userCameraShot",
        "userScreenShareShot",
        "onHtmlElementClick",
        "contactInfoReceived",
        "contactInfoRejected",
        "pauseConversation",
        "resumeConversation",
    ]
)


class BudgetRefused(Exception):
    """A connect turned away by a budget or a kill switch; the relay turns it into its `Refused`."""

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSAL_SENTENCES[reason])
        self.reason = reason
        self.message = REFUSAL_SENTENCES[reason]


# Ends the given bridges with a reason (the hub's `stop_bridges`).
Stopper = Callable[[Iterable["Bridge"], str], Awaitable[None]]


class BudgetGuard:
    def __init__(
        self,
        db: Database,
        shared: SharedState,
        read_token: Callable[[str], tuple[str, str]],
        interval: float,
        max_per_address: int,
    ) -> None:
        self.db = db
        self.shared = shared
        self.interval = interval
        self.max_per_address = max_per_address
        self.lease = interval * LEASE_CHECKS
        self.budgets: Budgets = NO_BUDGETS
        self._read_token = read_token  # page token -> (conversation id, flow slug); raises AppError
        self.pending: dict[str, tuple[int, float]] = {}  # conversation id -> (flow id, when admitted)
        self.started: dict[str, datetime] = {}  # conversation id -> when it started, while it is bridged
        self.checks = 0
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._failing = False  # shared state or the database is failing: said once, not every check

    def start(self, bridges: Callable[[], list[Bridge]], stop: Stopper) -> None:
        self._task = asyncio.create_task(self._run(bridges, stop))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _budget_of(self, slug: str) -> FlowBudget | None:
        budget = self.budgets.flows.get(slug)
        if budget is None:  # a flow created since the last check (unknown slugs: the join refuses them)
            budget = await budgets.flow_budget(self.db, slug)
        return budget

    async def admit(self, token: str, slug: str) -> None:
        """Raise `BudgetRefused` if this connect may not start or continue a conversation now."""
        if self.budgets.all_killed:
            raise BudgetRefused("kill_switch")
        try:
            conversation_id, token_slug = self._read_token(token)
        except AppError:
            return  # the join refuses it, with its own reason
        budget = await self._budget_of(slug)
        if budget is None or token_slug != slug:
            return
        if budget.killed:
            raise BudgetRefused("kill_switch")
        try:
            if budget.minutes_per_day is not None:
                used = await self.shared.add(
                    budgets.seconds_key(budget.flow_id, budgets.today()),
                    0,
                    ttl_seconds=budgets.DAY_TTL_SECONDS,
                )
                if used >= budget.minutes_per_day * 60:
                    raise BudgetRefused("budget_minutes")
            # Slots are held for capped flows only: each live bridge costs a renewal every few seconds.
            if budget.max_concurrent is not None and not await self.shared.hold(
                budgets.live_key(budget.flow_id),
                conversation_id,
                limit=budget.max_concurrent,
                lease_seconds=self.lease,
            ):
                raise BudgetRefused("budget_concurrent")
        except BudgetRefused:
            raise
        except Exception as exc:  # shared state failing: budgets fail open
            self._warn(f"shared state failed at a connect ({type(exc).__name__}); budgets not enforced")
            return
        self.pending[conversation_id] = (budget.flow_id, time.monotonic())

    async def hold_address(self, address: str, token: str) -> str | None:
        """Hold a slot among `address`'s conversations for the one `token` names: its id, or None when none
        is held (no address, a token the join will refuse, shared state failing). A conversation renews its
        own slot, so its reconnect, on any instance, is free. Raises `BudgetRefused` when all are held."""
        if not address:
            return None  # no address to group by (a Unix socket without a balancer)
        try:
            conversation_id, _slug = self._read_token(token)
        except AppError:
            return None
        try:
            held = await self.shared.hold(
                budgets.address_key(address),
                conversation_id,
                limit=self.max_per_address,
                lease_seconds=self.lease,
            )
        except Exception as exc:  # shared state failing: fail open, as the flows' budgets do
            self._warn(f"shared state failed at a connect ({type(exc).__name__}); budgets not enforced")
            return None
        if not held:
            raise BudgetRefused("per_address")
        return conversation_id

    def address_free(self, address: str, conversation_id: str, live: Callable[[str], bool]) -> None:
        """A connect that held `address`'s slot did not become a bridge: the slot comes free now unless the
        conversation is bridged (or dialling) here meanwhile."""
        if not live(conversation_id):
            self._background(self._let_go_key(budgets.address_key(address), conversation_id))

    def not_joined(self, token: str, live: Callable[[str], bool]) -> None:
        """The join refused the connect admitted: its slot comes free now rather than after the lease."""
        try:
            conversation_id, _slug = self._read_token(token)
        except AppError:
            return
        admitted = self.pending.pop(conversation_id, None)
        if admitted is not None and not live(conversation_id):
            self._background(self._let_go(admitted[0], conversation_id))

    def joined(self, conversation_id: str, started: datetime) -> None:
        self.started[conversation_id] = started

    def closed(self, bridge: Bridge, live: Callable[[str], bool]) -> None:
        """A bridge went: its slot comes free unless the conversation is bridged again here meanwhile."""

        async def let_go() -> None:
            if live(bridge.conversation_id):
                return
            self.started.pop(bridge.conversation_id, None)
            budget = self.budgets.flows.get(bridge.flow_slug)
            if budget is not None:
                await self._let_go_key(budgets.live_key(budget.flow_id), bridge.conversation_id)
            if bridge.address:
                await self._let_go_key(budgets.address_key(bridge.address), bridge.conversation_id)

        self._background(let_go())

    async def _run(self, bridges: Callable[[], list[Bridge]], stop: Stopper) -> None:
        while True:
            try:
                await self.check(bridges(), stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next check tries again
                self._warn(f"budget check failed ({type(exc).__name__}); retrying")
            else:
                if self._failing:
                    log.warning("relay: budget checks are working again")
                    self._failing = False
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Re-read budgets and switches now (another instance said one changed)."""
        try:
            self.budgets = await budgets.load(self.db)
        except Exception as exc:  # the next check tries again
            self._warn(f"budgets could not be read ({type(exc).__name__})")

    async def check(self, live: list[Bridge], stop: Stopper) -> None:
        self.budgets = await budgets.load(self.db)
        self.checks += 1
        now, wall = time.monotonic(), datetime.now(UTC)
        ending: dict[str, list[Bridge]] = defaultdict(list)
        seconds: dict[int, float] = defaultdict(float)
        by_flow: dict[int, list[Bridge]] = defaultdict(list)
        ended = await budgets.ended_by_operator(self.db, [bridge.conversation_id for bridge in live])
        for bridge in live:
            budget = self.budgets.flows.get(bridge.flow_slug)
            if budget is None:
                continue
            seconds[budget.flow_id] += now - bridge.counted
            bridge.counted = now
            by_flow[budget.flow_id].append(bridge)
            reason = (
                "ended_by_operator"
                if bridge.conversation_id in ended
                else self._over(bridge, budget, now, wall)
            )
            if reason is not None:
                ending[reason].append(bridge)
        day = budgets.today(wall)
        for flow_id, spent in seconds.items():
            used = await self.shared.add(
                budgets.seconds_key(flow_id, day), spent, ttl_seconds=budgets.DAY_TTL_SECONDS
            )
            flow = next(b for b in self.budgets.flows.values() if b.flow_id == flow_id)
            if flow.minutes_per_day is not None and used >= flow.minutes_per_day * 60:
                stopping = {id(b) for b in _flat(ending)}
                ending["budget_minutes"].extend(b for b in by_flow[flow_id] if id(b) not in stopping)
        for reason, stopped in ending.items():
            await stop(stopped, reason)
        if self.checks % RENEW_CHECKS == 0:
            await self._renew(live, ending)
        self._forget_pending(now, {b.conversation_id for b in live})

    def _over(self, bridge: Bridge, budget: FlowBudget, now: float, wall: datetime) -> str | None:
        if self.budgets.all_killed or budget.killed:
            return "kill_switch"
        started = self.started.get(bridge.conversation_id)
        if (
            budget.max_duration_seconds is not None
            and started is not None
            and (wall - started).total_seconds() >= budget.max_duration_seconds
        ):
            return "budget_duration"
        if budget.idle_cut_seconds is not None and now - bridge.visitor_at >= budget.idle_cut_seconds:
            return "budget_idle"
        return None

    async def _renew(self, live: list[Bridge], ending: dict[str, list[Bridge]]) -> None:
        gone = {id(b) for b in _flat(ending)}
        for bridge in live:
            if id(bridge) in gone:
                continue
            # A renewal refused (the lease lapsed and others took the slots) ends nothing: it is counted
            # again on the next renewal that fits.
            budget = self.budgets.flows.get(bridge.flow_slug)
            if budget is not None and budget.max_concurrent is not None:
                await self.shared.hold(
                    budgets.live_key(budget.flow_id),
                    bridge.conversation_id,
                    limit=budget.max_concurrent,
                    lease_seconds=self.lease,
                )
            if bridge.address:
                await self.shared.hold(
                    budgets.address_key(bridge.address),
                    bridge.conversation_id,
                    limit=self.max_per_address,
                    lease_seconds=self.lease,
                )

    def _forget_pending(self, now: float, bridged: set[str]) -> None:
        """Connects admitted that never became bridges: their slots and start times go."""
        for conversation_id, (flow_id, at) in list(self.pending.items()):
            if conversation_id in bridged:
                del self.pending[conversation_id]
            elif now - at > PENDING_SECONDS:
                del self.pending[conversation_id]
                self.started.pop(conversation_id, None)
                self._background(self._let_go(flow_id, conversation_id))
        for conversation_id in [c for c in self.started if c not in bridged and c not in self.pending]:
            del self.started[conversation_id]

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _let_go(self, flow_id: int, conversation_id: str) -> None:
        await self._let_go_key(budgets.live_key(flow_id), conversation_id)

    async def _let_go_key(self, key: str, conversation_id: str) -> None:
        with contextlib.suppress(Exception):  # failing, the lease frees it
            await self.shared.let_go(key, conversation_id)

    def _warn(self, message: str) -> None:
        if not self._failing:
            log.warning("relay: %s", message)
            self._failing = True


def _flat(ending: dict[str, list[Bridge]]) -> list[Bridge]:
    return [bridge for bridges in ending.values() for bridge in bridges]
