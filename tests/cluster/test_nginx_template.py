"""The nginx template in deploy/: Engine.IO sessions stay on their instance, new ones are balanced, and the
client address the instances see is the one nginx saw."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.cluster import TEMPLATE, Cluster, ClusterConfig, render_template
from server.relay.session_ids import instance_of, prefix_session_ids
from tests.support import ServerThread, free_port, wait_until_up


def test_the_template_fills_only_its_placeholders() -> None:
    text = render_template(
        TEMPLATE.read_text(), {"LISTEN": "127.0.0.1:8080", "APP_1": "app1:8000", "APP_2": "app2:8000"}
    )
    assert "${" not in text
    assert "server app1:8000" in text and "listen 127.0.0.1:8080;" in text
    assert "$arg_sid" in text and "$remote_addr" in text  # nginx's own variables stay for nginx


def test_session_ids_carry_the_instance_id() -> None:
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi")
    prefix_session_ids(sio, "2")
    first, second = sio.eio.generate_id(), sio.eio.generate_id()
    assert first != second and instance_of(first) == instance_of(second) == "2"
    assert instance_of("AbC-_x") == ""  # base64url ids never contain the separator


def echo(name: str) -> Starlette:
    async def who(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "instance": name,
                "client": request.headers.get("x-forwarded-for"),
                "host": request.headers["host"],
            }
        )

    return Starlette(routes=[Route("/{path:path}", who)])


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[str]:
    """nginx from the template, as `make cluster` writes it, before two instances that say who they are."""
    if shutil.which("nginx") is None:
        pytest.skip("needs nginx (`make setup` installs it)")
    with ServerThread(echo("1")) as one, ServerThread(echo("2")) as two:
        cluster = Cluster(
            ClusterConfig(listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path, log_dir=tmp_path)
        )
        cluster.instance_ports = [one.port, two.port]
        cluster.write_nginx_config()
        cluster.nginx.start()
        try:
            wait_until_up(f"{cluster.url}/healthz")
            yield cluster.url
        finally:
            cluster.stop()


def test_a_session_goes_back_to_its_instance_and_new_ones_are_spread(balanced: str) -> None:
    def instance(**params: str) -> str:
        answer: str = httpx.get(f"{balanced}/socket.io/", params={"EIO": "4", **params}).json()["instance"]
        return answer

    assert {instance(sid="1.AAAAAAAAAAAAAAAAAAAA") for _ in range(6)} == {"1"}
    assert {instance(sid="2.AAAAAAAAAAAAAAAAAAAA") for _ in range(6)} == {"2"}
    assert {instance(transport="polling") for _ in range(6)} == {"1", "2"}  # a new session: round robin


def test_the_instances_see_the_address_nginx_saw_not_what_the_client_claims(balanced: str) -> None:
    seen = httpx.get(f"{balanced}/a/demo", headers={"X-Forwarded-For": "203.0.113.9"}).json()
    assert seen["client"] == "127.0.0.1"
    assert seen["host"] == balanced.removeprefix("http://")
