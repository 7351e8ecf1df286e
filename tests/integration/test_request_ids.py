"""Log lines name the request (X-Request-ID, the proxy's or ours, echoed) and the relayed conversation."""

from __future__ import annotations

import json
import logging.config
import re
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from server.logs import logging_config
from tests.integration.test_relay import refused
from tests.support import ServerThread, prepared_settings
from tests.unit.test_logs import restore_logging  # noqa: F401 - a fixture

PROXY_ID = "0123456789abcdef0123456789abcdef"  # what nginx's $request_id looks like


async def test_log_lines_carry_the_request_id_and_the_conversation_id(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,  # noqa: F811 - the fixture imported above
) -> None:
    # No simulator listens at the settings' URL: the relay's connect fails and says so in a log line.
    settings = prepared_settings(tmp_path, log_format="json")
    thread = ServerThread(create_app(settings))
    logging.config.dictConfig(logging_config(settings))  # after uvicorn configured its own, as `serve` runs
    with thread as server:
        page = httpx.get(
            f"{server.url}/a/demo", params={"first_name": "Ana"}, headers={"X-Request-ID": PROXY_ID}
        )
        assert page.headers["x-request-id"] == PROXY_ID
        odd = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "no spaces.or dots, please"})
        ours = odd.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", ours)
        again = httpx.get(f"{server.url}/healthz").headers["x-request-id"]
        assert again not in (ours, PROXY_ID)
        config = json.loads(page.text.split('id="avatar-config">')[1].split("</script>")[0])
        session_id, token = config["session"]["id"], config["session"]["token"]
        assert "unreachable" in await refused(server, token)
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    access = [
        (line["message"].split('"')[1], line.get("request_id"))
        for line in lines
        if line["logger"] == "uvicorn.access"
    ]
    assert ("GET /a/demo HTTP/1.1", PROXY_ID) in access
    assert {rid for request, rid in access if request == "GET /healthz HTTP/1.1"} == {ours, again}
    relay = [line for line in lines if line["logger"] == "avatar_bff.relay"]
    assert relay and all(line["conversation_id"] == session_id for line in relay), relay
    assert token not in err and "Ana" not in err  # no page token, no visitor value
