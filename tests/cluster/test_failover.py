"""Losing an instance: PostgreSQL, Redis, the simulator, two instances and nginx on loopback, as
`make cluster` runs them; 200 SDK-protocol conversations, one instance SIGKILLed while each is under way."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import pytest

from deploy.cluster import Cluster, ClusterConfig
from deploy.conversations import Conversation, Outcome, stored_lines, talk
from tests.support import eventually_async, free_port, fresh_postgres_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("AVATAR_BFF_REDIS_URL"), reason="needs AVATAR_BFF_REDIS_URL (Redis)"
    ),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (`make setup` installs it)"),
]

CONVERSATIONS = 200
KILLED = "1"
LOAD_SETTINGS = {  # one instance must be able to take every conversation once the other is gone
    "AVATAR_BFF_RELAY_MAX_PER_FLOW": "1000",
    "AVATAR_BFF_RELAY_MAX_TOTAL": "1000",
    "AVATAR_BFF_RELAY_MAX_PER_ADDRESS": "1000",  # every client here is 127.0.0.1
    "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "1000",  # every visitor comes from 127.0.0.1
    "AVATAR_BFF_PAGE_VIEWS_BURST": "1000",
    "AVATAR_BFF_LOG_LEVEL": "warning",
    # Keys of their own in a Redis other tests use too: no bucket or mark from another test applies.
    "AVATAR_BFF_REDIS_KEY_PREFIX": f"avatar-bff-failover-{uuid.uuid4().hex[:8]}:",
}


def cluster_config(tmp_path: Path, database_url: str) -> ClusterConfig:
    return ClusterConfig(
        listen=f"127.0.0.1:{free_port()}",
        database_url=database_url,
        redis_url=os.environ["AVATAR_BFF_REDIS_URL"],
        data_dir=tmp_path / "cluster",
        log_dir=tmp_path / "logs",
        env=LOAD_SETTINGS,
        simulator_args=["--time-scale", "0.05", "--max-sessions", "1000"],
    )


def test_an_instance_killed_mid_conversation_hands_every_conversation_to_the_other_and_loses_no_line(
    tmp_path: Path,
) -> None:
    with fresh_postgres_database() as url, Cluster(cluster_config(tmp_path, url)) as cluster:
        killed_at: list[int] = []

        async def run() -> Outcome:
            hold = asyncio.Event()  # visitors answer only once the kill is done: every one is mid-call

            async def kill_once_all_are_connected(conversations: list[Conversation]) -> None:
                try:
                    await eventually_async(
                        lambda: sum(c.connects > 0 for c in conversations),
                        lambda connected: connected == CONVERSATIONS,
                        timeout=60,
                        interval=0.1,
                        what="every conversation connected",
                    )
                    killed_at.append(sum(c.ended for c in conversations))
                    cluster.kill_instance(int(KILLED))
                finally:
                    hold.set()

            return await talk(
                cluster.url,
                CONVERSATIONS,
                think_seconds=1.0,
                replies=3,
                during=kill_once_all_are_connected,
                hold=hold,
            )

        outcome = asyncio.run(run())
        stored = asyncio.run(stored_lines(url, outcome))
        print(outcome.summary())
        assert not cluster.instances[0].running()
        assert cluster.instances[1].running(), "the surviving instance stopped"

    conversations = outcome.conversations
    assert killed_at == [0], "the kill must find every conversation under way"
    # Round robin spread them; those of the killed instance reconnected (the SDK's own policy) to the other.
    began_there = [c for c in conversations if c.instances[:1] == [KILLED]]
    assert len(began_there) >= CONVERSATIONS // 4, [c.instances for c in conversations[:10]]
    assert outcome.moved(KILLED) == began_there, [(c.instances, c.errors[-3:]) for c in began_there][:5]
    # Every conversation went on to its end: the avatar ended it, none hung or was refused.
    assert outcome.ended == CONVERSATIONS, outcome.summary()
    assert set(stored.statuses.values()) == {"ended"}, stored.statuses
    # Those that moved were greeted again on the other instance (upstream re-opened) and talked on there.
    assert all(sum(line.role == "Avatar" for line in c.lines) >= 3 for c in began_there)
    # Nothing a page was told is stored (its highest_seq) is missing, and every line the page had time to
    # send was acknowledged: all but the last exchange, which races the avatar's end of the call (then the
    # page is refused with 409, and the relay's own transcript holds those lines).
    assert stored.lost(outcome) == 0
    late = [(c.instances, c.acknowledged, len(c.in_time()), c.errors[-2:]) for c in conversations]
    assert [entry for entry in late if entry[1] < entry[2]] == []
