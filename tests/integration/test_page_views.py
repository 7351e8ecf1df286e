"""Page views: rendered once per flow version, limited per client address, URLs never taken from the Host
header, static assets under content-hashed URLs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.security.signing import PAGE_SESSION, Signer
from server.settings import Settings
from tests import factories
from tests.integration.test_hosted_pages import page_config
from tests.support import ServerThread, eventually, prepared_settings, with_database

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"


@pytest.fixture
def fast_settings(tmp_path: Path) -> Settings:
    """Flows trusted for a tenth of a second, so edits show at once in these tests."""
    return prepared_settings(tmp_path, page_flow_cache_seconds=0.1)


@pytest.fixture
def server(fast_settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(fast_settings)) as running:
        yield running


def test_hostile_host_header_reaches_neither_the_dpp_nor_the_token(
    server: ServerThread, fast_settings: Settings
) -> None:
    # Finding 13: the Host header went into flow.url (6,600 characters past the visitor limits).
    # The iframe page carries its DPP; a socket page's is rendered from the token's url when it starts.
    hostile = "evil.example" + "x" * 6600
    response = httpx.get(f"{server.url}/a/demo-iframe", headers={"host": hostile})
    assert response.status_code == 200
    config = page_config(response.text)
    assert config["dpp"]["page"]["url"] == f"{server.url}/a/demo-iframe"  # type: ignore[index]
    token = config["session"]["token"]  # type: ignore[index]
    assert Signer(fast_settings.secret).verify(PAGE_SESSION, token)["url"] == f"{server.url}/a/demo-iframe"
    assert "evil.example" not in response.text


def test_page_urls_come_from_the_public_url(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, public_url="https://avatars.example.com/")
    with ServerThread(create_app(settings)) as running:
        page = httpx.get(f"{running.url}/a/demo-iframe", headers={"host": "evil.example"})
    url = page_config(page.text)["dpp"]["page"]["url"]  # type: ignore[index]
    assert url == "https://avatars.example.com/a/demo-iframe"


def test_no_redirect_points_at_the_host_header(server: ServerThread) -> None:
    # Finding 13: `Host: evil.example` turned /a/demo/ into `location: http://evil.example/a/demo`.
    for path in ("/a/demo/", "/healthz/", "/api/v1/conversations/", "/static/css/"):
        response = httpx.get(f"{server.url}{path}", headers={"host": "evil.example"})
        assert "evil.example" not in response.headers.get("location", ""), path
        assert response.status_code == 404, path


def test_page_views_are_limited_per_client_address(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path, page_views_per_second=0.5, page_views_burst=3)
    with ServerThread(create_app(settings)) as running, httpx.Client(base_url=running.url) as client:
        assert [client.get("/a/demo").status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get("/a/demo", headers={"accept": "application/json"})
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_page_views"
        assert "Too many page views from your address; try again in" in refused.json()["message"]
        page = client.get("/a/demo", headers={"accept": "text/html"})
        assert page.status_code == 429 and "Too many requests" in page.text
        assert client.get("/healthz").status_code == 200  # only page views are limited


def test_a_dpp_rendered_past_64_kb_is_refused_with_a_message(
    server: ServerThread, fast_settings: Settings
) -> None:
    # Finding 12: the cap on the rendered DPP. Each visitor value is short; the template multiplies it.
    body = {"text": "{{ (visitor.name | default('')) * 400 }}"}
    # An iframe page: its config carries the DPP (a socket page's goes through the relay).
    with_database(
        fast_settings,
        lambda db: factories.create_flow(
            db, "big", template_body=body, sdk_mode="iframe", upstream="simulator"
        ),
    )
    small = httpx.get(f"{server.url}/a/big", params={"name": "a" * 100})  # 40 KB
    assert small.status_code == 200
    assert page_config(small.text)["dpp"] == {"text": "a" * 40_000}
    large = httpx.get(f"{server.url}/a/big", params={"name": "a" * 200}, headers={"accept": "text/html"})
    assert large.status_code == 503
    assert "the rendered DPP exceeds 64 KB" in large.text


def test_an_edited_flow_shows_on_its_page_and_each_view_is_its_own(
    server: ServerThread, fast_settings: Settings
) -> None:
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/a/demo-iframe?first_name=Ana")
        second = client.get("/a/demo-iframe?first_name=Bo")
        assert page_config(first.text)["dpp"]["user"]["first_name"] == "Ana"  # type: ignore[index]
        assert page_config(second.text)["dpp"]["user"]["first_name"] == "Bo"  # type: ignore[index]
        assert page_config(first.text)["session"] != page_config(second.text)["session"]
        nonces = [re.search(r'nonce="([^"]+)"', r.text).group(1) for r in (first, second)]  # type: ignore[union-attr]
        assert nonces[0] != nonces[1]
        for nonce, response in zip(nonces, (first, second), strict=True):
            assert f"'nonce-{nonce}'" in response.headers["content-security-policy"]

        slug = "demo-iframe"
        with_database(fast_settings, lambda db: factories.change_flow(db, slug, display_name="Renamed"))
        renamed = eventually(lambda: client.get(f"/a/{slug}").text, lambda text: "<h1>Renamed</h1>" in text)
        assert page_config(renamed)["flow"] == {"slug": slug, "name": "Renamed"}

        with_database(fast_settings, lambda db: factories.change_flow(db, slug, enabled=False))
        eventually(lambda: client.get(f"/a/{slug}").status_code, lambda status: status == 404)


def hashed_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/v/[^"]+)"', html)


def test_static_assets_have_hashed_immutable_urls_and_relative_imports_work(server: ServerThread) -> None:
    page = httpx.get(f"{server.url}/a/demo")
    urls = hashed_urls(page.text)
    assert {url.split("/", 4)[4] for url in urls} >= {"css/page.css", "js/socket-page.js"}
    assert len({url.split("/")[3] for url in urls}) == 1  # one version for the whole tree
    for url in urls:
        asset = httpx.get(f"{server.url}{url}")
        assert asset.status_code == 200 and asset.headers["cache-control"] == IMMUTABLE, url
    # socket-page.js imports its siblings by relative path: they resolve under the same version.
    version_dir = next(url for url in urls if url.endswith("socket-page.js")).rsplit("/", 1)[0]
    script = httpx.get(f"{server.url}{version_dir}/socket-page.js").text
    imports = re.findall(r"from ['\"]\./([\w.-]+\.js)['\"]", script)
    assert imports
    for name in imports:
        imported = httpx.get(f"{server.url}{version_dir}/{name}")
        assert imported.status_code == 200 and imported.headers["cache-control"] == IMMUTABLE
    libraries = page_config(page.text)["libraries"]
    assert isinstance(libraries, dict) and all(
        url.startswith(version_dir.rsplit("/", 1)[0]) for url in libraries.values()
    )
    assert httpx.get(f"{server.url}/static/css/page.css").headers["cache-control"] == SHORT
    stale = httpx.get(f"{server.url}/static/v/0123456789abcdef/css/page.css")  # a page from before a deploy
    assert stale.status_code == 200 and stale.headers["cache-control"] == SHORT
