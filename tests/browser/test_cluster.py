"""What `make cluster` runs, with the real pinned Socket SDK in Chromium: a visitor's conversation goes on
through nginx when the instance holding it is SIGKILLed, and a new visitor starts one after (issue 15)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from deploy.cluster import Cluster, ClusterConfig
from tests.browser.conftest import PageWatch
from tests.support import free_port, fresh_postgres_database

T = TypeVar("T")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("AVATAR_BFF_REDIS_URL"), reason="needs AVATAR_BFF_REDIS_URL (Redis)"
    ),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (`make setup` installs it)"),
]


def in_a_thread(work: Callable[[], T]) -> T:
    """Playwright's sync API runs an event loop in this thread, where the cluster's and the database helpers'
    asyncio.run cannot."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    database = fresh_postgres_database()
    url = in_a_thread(database.__enter__)
    try:
        config = ClusterConfig(
            listen=f"127.0.0.1:{free_port()}",
            database_url=url,
            redis_url=os.environ["AVATAR_BFF_REDIS_URL"],
            data_dir=tmp_path / "cluster",
            log_dir=tmp_path / "logs",
            env={"AVATAR_BFF_REDIS_KEY_PREFIX": f"avatar-bff-chromium-{uuid.uuid4().hex[:8]}:"},
        )
        running = in_a_thread(Cluster(config).start)
        try:
            yield running
        finally:
            in_a_thread(running.stop)
    finally:
        in_a_thread(lambda: database.__exit__(None, None, None))


def what_each_side_saw(page: Page, cluster: Cluster) -> str:
    """For a failure's message: the SDK's state and the events each simulator session heard from the relay."""
    state = page.evaluate("() => window.avatarPage.sdk.getState()")
    sessions = httpx.get(f"http://127.0.0.1:{cluster.simulator_port}/_sim/sessions").json()
    heard = [[e["event"] for e in s["events"] if e["dir"] == "in"] for s in sessions]
    return f"SDK state {state!r}; each upstream session heard {heard}"


def talk(page: Page, said: str, answer: str) -> None:
    page.get_by_label("Type a message").fill(said)
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#transcript")).to_contain_text(answer, timeout=30_000)


def test_a_conversation_survives_its_instance_and_new_ones_start_after(
    cluster: Cluster, watch: PageWatch
) -> None:
    page = watch.page
    instances: list[str] = []  # the instance (Engine.IO sid prefix) of each Socket.IO request, in order
    page.on(
        "request",
        lambda request: instances.extend(
            sid.split(".")[0] for sid in parse_qs(urlsplit(request.url).query).get("sid", [])
        ),
    )
    page.goto(f"{cluster.url}/a/demo?first_name=Ana")
    page.get_by_role("button", name="Start conversation").click()
    expect(page.locator("#transcript")).to_contain_text("Hello Ana!", timeout=30_000)
    talk(page, "show me a chart", "Here is a chart.")
    holder = instances[-1]

    cluster.kill_instance(int(holder))
    status = page.locator("#status")
    expect(status).to_contain_text("Reconnecting", timeout=30_000)
    expect(status).to_contain_text("In conversation", timeout=30_000)
    assert instances[-1] != holder  # the other instance holds it now
    greetings = page.locator("#transcript li", has_text="Hello Ana!")
    expect(greetings).to_have_count(2, timeout=30_000)  # upstream re-opened there with the same page token
    try:
        talk(page, "show me a table", "Here is a table.")  # typed right after the failover
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{what_each_side_saw(page, cluster)}") from None

    newcomer = page.context.new_page()
    newcomer.goto(f"{cluster.url}/a/demo?first_name=Bo")
    newcomer.get_by_role("button", name="Start conversation").click()
    expect(newcomer.locator("#transcript")).to_contain_text("Hello Bo!", timeout=30_000)
    talk(newcomer, "bye", "Ending call now.")
    assert watch.violations() == []
