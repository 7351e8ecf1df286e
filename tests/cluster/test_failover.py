"""Losing an instance: PostgreSQL, Redis, the simulator, two instances and nginx on loopback, as `make cluster`
runs them; 200 SDK-protocol conversations, one instance SIGKILLed while every one of them is under way."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from deploy.cluster import Cluster, ClusterConfig
from deploy.conversations import Conversation, stored_lines, talk
from tests.support import eventually_async, free_port, fresh_postgres_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("AVATAR_BFF_REDIS_URL"), reason="needs AVATAR_BFF_REDIS_URL (Redis)"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (`make setup` installs it)"),
]

CONVERSATIONS = 200
KILLED = "1"
LOAD_SETTINGS = {  # one instance must be able to take every conversation once the other is gone
    "AVATAR_BFF_RELAY_MAX_PER_FLOW": "1000",
    "AVATAR_BFF_RELAY_MAX_TOTAL": "1000",
    "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "1000",  # every visitor comes from 127.0.0.1
    "AVATAR_BFF_PAGE_VIEWS_BURST": "1000",
    "AVATAR_BFF_LOG_LEVEL": "warning",
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

        async def kill_once_all_are_talking(conversations: list[Conversation]) -> None:
            await eventually_async(
                lambda: sum(c.greeted.is_set() for c in conversations),
                lambda greeted: greeted == CONVERSATIONS,
                timeout=60,
                interval=0.2,
                what="every conversation greeted",
            )
            cluster.kill_instance(int(KILLED))

        outcome = asyncio.run(
            talk(cluster.url, CONVERSATIONS, think_seconds=1.5, replies=3, during=kill_once_all_are_talking)
        )
        stored = asyncio.run(stored_lines(url, outcome))
        print(outcome.summary())
        assert not cluster.instances[0].running()
        assert cluster.instances[1].running(), "the surviving instance stopped"

    conversations = outcome.conversations
    # Round robin spread them; those of the killed instance reconnected (the SDK's own policy) to the other.
    moved = outcome.moved(KILLED)
    began_there = [c for c in conversations if c.instances[:1] == [KILLED]]
    assert len(began_there) >= CONVERSATIONS // 4, [c.instances for c in conversations[:10]]
    assert moved == began_there, [(c.instances, c.errors[-3:]) for c in began_there if c not in moved][:5]
    # Every conversation went on to its end: the avatar said goodbye and ended it, none hung or was refused.
    assert outcome.ended == CONVERSATIONS, outcome.summary()
    assert set(stored.statuses.values()) == {"ended"}, stored.statuses
    # Nothing acknowledged is lost, and the pages' lines were acknowledged (a few may be refused as late once
    # the avatar ended the call: those the page is told about, and none is acknowledged).
    assert stored.lost(outcome) == 0
    assert outcome.acknowledged >= 0.95 * outcome.lines, outcome.summary()
    for c in conversations:
        assert set(range(1, c.acknowledged + 1)) <= stored.seqs.get(c.session_id, set())
    # The moved ones were greeted again on the other instance and talked there.
    assert all(sum(line.role == "Avatar" for line in c.lines) >= 2 for c in moved)
