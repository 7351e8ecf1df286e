"""Session budgets per flow and the kill switches: what is set (database) and what is used (shared state).

A flow's budget is part of its definition (`FlowSpec`: longest conversation, idle cut, conversations at once,
conversation minutes per UTC day). Kill switches are operational state: a row per engaged switch, changed
from the console and audited. Usage lives in `SharedState`, so every instance counts against the same
numbers: a held slot per live conversation of a capped flow, and a per-flow, per-day counter of relayed
seconds. The relay enforces all of it for Socket-mode conversations (`server.relay.budgets`); Iframe-mode
pages ask `server.page_budgets`, which keeps the same keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select

from server import audit
from server.conversations import lifecycle, timeline
from server.db import Database
from server.errors import NotFound
from server.models import GLOBAL_SWITCH, Conversation, ConversationStatus, Flow, KillSwitch, utcnow
from server.shared_state import SharedState

log = logging.getLogger("avatar_bff.budgets")
DAY_TTL_SECONDS = 2 * 24 * 3600  # a day's counter outlives its day, for whoever reads it late


@dataclass(frozen=True)
class FlowBudget:
    flow_id: int
    slug: str
    max_duration_seconds: int | None
    idle_cut_seconds: int | None
    max_concurrent: int | None
    minutes_per_day: int | None
    killed: bool  # the flow's own kill switch is on
    sdk_mode: str = "socket"  # socket: the relay enforces; iframe: the page asks (`server.page_budgets`)


@dataclass(frozen=True)
class Switch:
    engaged_by: str
    engaged_at: datetime


@dataclass(frozen=True)
class Budgets:
    """Every flow's budget and the switches, as one instance last read them."""

    flows: dict[str, FlowBudget]  # by slug
    global_switch: Switch | None
    flow_switches: dict[str, Switch]  # by slug

    @property
    def all_killed(self) -> bool:
        return self.global_switch is not None


NO_BUDGETS = Budgets({}, None, {})


def _budget(flow: Flow, killed: bool) -> FlowBudget:
    return FlowBudget(
        flow.id,
        flow.slug,
        flow.max_duration_seconds,
        flow.idle_cut_seconds,
        flow.max_concurrent,
        flow.minutes_per_day,
        killed,
        flow.sdk_mode,
    )


async def load(db: Database) -> Budgets:
    """Two small queries; the relay runs this every few seconds on each instance."""
    async with db.reading() as session:
        flows = list((await session.execute(select(Flow))).scalars())
        switches = list((await session.execute(select(KillSwitch))).scalars())
    by_id = {flow.id: flow.slug for flow in flows}
    flow_switches = {
        by_id[s.flow_id]: Switch(s.engaged_by, s.engaged_at) for s in switches if s.flow_id in by_id
    }
    global_switch = next(
        (Switch(s.engaged_by, s.engaged_at) for s in switches if s.scope == GLOBAL_SWITCH), None
    )
    return Budgets(
        {flow.slug: _budget(flow, flow.slug in flow_switches) for flow in flows},
        global_switch,
        flow_switches,
    )


async def flow_budget(db: Database, slug: str) -> FlowBudget | None:
    """One flow's budget, for a connect to a flow the last `load` did not know yet."""
    async with db.reading() as session:
        flow = await session.scalar(select(Flow).where(Flow.slug == slug))
        if flow is None:
            return None
        killed = await session.scalar(select(KillSwitch.scope).where(KillSwitch.flow_id == flow.id))
    return _budget(flow, killed is not None)


async def set_switch(db: Database, slug: str | None, engaged: bool, actor: str) -> bool:
    """Engage or release the kill switch of flow `slug` (None: the global one); False when it was so already.

    Audited like every console change. Instances notice within their budget check interval."""
    async with db.transaction() as session:
        if slug is None:
            scope, flow_id, target_type, target = GLOBAL_SWITCH, None, "relay", "all flows"
        else:
            flow_id = await session.scalar(select(Flow.id).where(Flow.slug == slug))
            if flow_id is None:
                raise NotFound("unknown_flow", f"There is no flow {slug!r}.")
            scope, target_type, target = f"flow:{flow_id}", "flow", slug
        current = await session.get(KillSwitch, scope)
        if (current is not None) == engaged:
            return False  # a form posted twice: nothing changes, nothing to record
        if engaged:
            session.add(KillSwitch(scope=scope, flow_id=flow_id, engaged_by=actor))
        else:
            await session.execute(delete(KillSwitch).where(KillSwitch.scope == scope))
        action = "kill" if engaged else "revive"
        before, after = {"killed": not engaged}, {"killed": engaged}
        audit.record(session, actor, action, target_type, target, before, after)
    log.warning("budgets: kill switch of %s %s", target, "engaged" if engaged else "released")
    return True


async def end_conversation(db: Database, conversation_id: str, actor: str) -> bool:
    """An operator ends a conversation (audited); False when it had ended already. The relay, told next,
    stores what was said and closes the visitor's connection on whichever instance holds it."""
    async with db.transaction() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise NotFound("unknown_conversation", "This conversation no longer exists.")
        if conversation.status == ConversationStatus.ENDED:
            return False
        lifecycle.end(conversation, "ended_by_operator", utcnow())
        await timeline.record(
            session, conversation_id, "end", {"reason": "ended_by_operator", "by": "operator"}
        )
        audit.record(
            session, actor, "end", "conversation", conversation_id, {"status": "active"}, {"status": "ended"}
        )
    return True


async def ended_by_operator(db: Database, conversation_ids: list[str]) -> set[str]:
    """Which of these conversations an operator ended. The relay's control message reaches every instance
    at once; this read, at each budget check, ends the bridges of an instance that missed it (Redis down)."""
    if not conversation_ids:
        return set()
    async with db.reading() as session:
        found = await session.scalars(
            select(Conversation.id).where(
                Conversation.id.in_(conversation_ids),
                Conversation.status == ConversationStatus.ENDED,
                Conversation.end_reason == "ended_by_operator",
            )
        )
        return set(found)


# Usage, in shared state. Keys are namespaced here only; both the relay and the readers use these.


def live_key(flow_id: int) -> str:
    return f"budget:live:{flow_id}"


def seconds_key(flow_id: int, day: str) -> str:
    return f"budget:seconds:{flow_id}:{day}"


def address_key(address: str) -> str:
    """Conversations live from one client address, in either mode, on every instance (a slot each)."""
    return f"budget:per-address:{address}"


def today(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Usage:
    budget: FlowBudget
    live: int | None  # conversations live now (relayed or beating), across instances (capped flows only)
    minutes_today: float  # conversation minutes since midnight UTC (relayed and beating), across instances


async def usage(shared: SharedState, budgets: Budgets) -> list[Usage]:
    """Each flow's use against its budget, by slug; a shared state that fails reads as zero."""
    day = today()
    rows = []
    for slug in sorted(budgets.flows):
        budget = budgets.flows[slug]
        try:
            live = None if budget.max_concurrent is None else await shared.held(live_key(budget.flow_id))
            seconds = await shared.add(seconds_key(budget.flow_id, day), 0, ttl_seconds=DAY_TTL_SECONDS)
        except Exception as exc:  # a read for operators must not fail the page
            log.warning("budgets: usage unavailable (%s)", type(exc).__name__)
            live, seconds = None, 0.0
        rows.append(Usage(budget, live, round(seconds / 60, 1)))
    return rows
