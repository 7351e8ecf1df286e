"""Defect 6 of the issue "SDK fidelity" in Chromium on the real pinned Socket SDK: a flow's region picks its
TURN servers, although the SDK's socket URL is now our own origin (from which it would derive the US ones).

No Kaltura region is reachable from a test machine, so no peer connection is ever made: the call is refused.
What is checked is what the SDK instance the page built would give every `RTCPeerConnection` it makes (WHEP
video, the microphone's ASR, the audio fallback): the SDK's own ICE server builder on each of them, run in
the browser, and Chromium's reading of that configuration.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import update

from server.db import Database
from server.models import Flow
from server.settings import Settings
from tests.browser.conftest import PageWatch
from tests.browser.test_sdk_fidelity import add_flow, server, simulator  # noqa: F401 - fixtures
from tests.support import ServerThread, with_database

# Every Socket SDK instance the page constructs, kept after the page lets it go (a refused call).
KEEP_INSTANCES = """
window.__sdks = [];
let sdkClass;
Object.defineProperty(window, 'KalturaAvatarSDK', {
  configurable: true,
  get() { return sdkClass; },
  set(value) {
    sdkClass = new Proxy(value, {
      construct(target, args, newTarget) {
        const instance = Reflect.construct(target, args, newTarget);
        window.__sdks.push(instance);
        return instance;
      },
    });
  },
});
"""

# The ICE configuration each of the SDK's peer connections would get, as the SDK builds it, and as Chromium
# reads it back (a configuration Chromium refuses throws here, as it would in the SDK).
ICE_CONFIGURATIONS = """() => {
  const sdk = window.__sdks[0];
  const policy = sdk._config.turn.iceTransportPolicy;
  const out = {};
  for (const [name, part] of [['whep', sdk._whep], ['asr', sdk._asr], ['fallback', sdk._audioFallback]]) {
    const iceServers = part._buildIceServers();
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: policy });
    out[name] = { built: iceServers, chromium: pc.getConfiguration() };
    pc.close();
  }
  return out;
}"""

TURN_HOST = re.compile(r"turns?:([^:?]+)")


def hosts(ice_servers: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for ice_server in ice_servers:
        urls = ice_server["urls"]
        for url in [urls] if isinstance(urls, str) else urls:
            match = TURN_HOST.match(url)
            assert match is not None, url
            found.add(match.group(1))
    return found


def test_each_flow_gets_its_regions_turn_servers(
    server: tuple[ServerThread, Settings],  # noqa: F811
    watch: PageWatch,
) -> None:
    running, settings = server
    add_flow(settings, "europe", upstream="kaltura-eu", turn_override=None)
    add_flow(settings, "america", upstream="kaltura-us", turn_override=None)
    page = watch.page
    page.add_init_script(KEEP_INSTANCES)
    for slug, region in (("europe", "eu"), ("america", "us")):
        page.goto(f"{running.url}/a/{slug}")
        page.get_by_role("button", name="Start conversation").click()
        page.wait_for_function("() => window.__sdks.length === 1")
        found = page.evaluate(ICE_CONFIGURATIONS)
        expected = {f"turn.avatar.{region}.kaltura.ai"}
        for name, configs in found.items():
            assert hosts(configs["built"]) == expected, (slug, name, configs)
            assert hosts(configs["chromium"]["iceServers"]) == expected, (slug, name, configs)
            assert configs["chromium"]["iceTransportPolicy"] == "relay"
        # The region's service is not reachable from here: the visitor is told, and the page lets the SDK go.
        expect(page.get_by_role("alert")).to_be_visible(timeout=20_000)
    assert watch.violations() == []


def test_a_stored_turn_override_without_urls_never_reaches_the_browser(
    server: tuple[ServerThread, Settings],  # noqa: F811
    watch: PageWatch,
) -> None:
    """Defect 2: Chromium refuses an ICE server with no URL ("Empty uri"), which broke every peer. Imports and
    the console refuse such an override; a row that has one anyway (written before migration 0008, or by
    hand) gets the flow's region's servers instead."""
    running, settings = server
    add_flow(settings, "handmade", upstream="kaltura-eu", turn_override=None)

    async def hand_edit(db: Database) -> None:
        async with db.transaction() as session:
            legacy = {"urls": [], "username": "u", "credential": "c", "iceTransportPolicy": "relay"}
            await session.execute(update(Flow).where(Flow.slug == "handmade").values(turn_override=legacy))

    with_database(settings, hand_edit)
    page = watch.page
    page.add_init_script(KEEP_INSTANCES)
    page.goto(f"{running.url}/a/handmade")
    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function("() => window.__sdks.length === 1")
    for name, configs in page.evaluate(ICE_CONFIGURATIONS).items():  # Chromium would throw on an empty list
        assert hosts(configs["chromium"]["iceServers"]) == {"turn.avatar.eu.kaltura.ai"}, (name, configs)
    expect(page.get_by_role("alert")).to_be_visible(timeout=20_000)
