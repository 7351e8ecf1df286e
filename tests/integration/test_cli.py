"""The `avatar-bff` command, run as an operator would: a real process with the environment as its config."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server.models import AdminUser, ApiToken, Flow
from server.security.secrets_hashing import hash_api_token, verify_password
from server.settings import Settings
from tests.support import TEST_SECRET, db_session, free_port, wait_until_up

CLI = [sys.executable, "-c", "from server.cli import main; main()"]


def run(args: list[str], data_dir: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_BFF_")}
    environment.update({"AVATAR_BFF_DATA_DIR": str(data_dir), "AVATAR_BFF_SECRET_KEY": TEST_SECRET, **env})
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def test_invalid_settings_fail_with_one_line(tmp_path: Path) -> None:
    result = run(["migrate"], tmp_path, AVATAR_BFF_LOG_LEVEL="loud")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "AVATAR_BFF_LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_missing_secret_in_production_fails_with_one_line(tmp_path: Path) -> None:
    result = run(["serve"], tmp_path, AVATAR_BFF_SECRET_KEY="")
    assert result.returncode == 2
    assert "AVATAR_BFF_SECRET_KEY" in result.stderr and "Traceback" not in result.stderr


def test_the_demo_stops_its_simulator_when_it_is_stopped(tmp_path: Path) -> None:
    port, simulator_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_BFF_")}
    environment.update({"AVATAR_BFF_DATA_DIR": str(tmp_path), "AVATAR_BFF_ENVIRONMENT": "dev"})
    command = [*CLI, "serve", "--demo", "--port", str(port), "--simulator-port", str(simulator_port)]
    demo = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{simulator_port}/_sim/health")
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        demo.terminate()  # SIGTERM, as from `docker stop` or systemd
        demo.wait(timeout=20)
        with pytest.raises(httpx.ConnectError):  # nothing left listening on the simulator's port
            httpx.get(f"http://127.0.0.1:{simulator_port}/_sim/health", timeout=2)
    finally:
        demo.kill()


def test_create_token_prints_it_alone_on_the_last_line_and_stores_a_hash(
    settings: Settings, tmp_path: Path
) -> None:
    result = run(["create-token", "crm", "--scope", "transcripts:read"], settings.data_dir)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("abff_") and " " not in token

    async def stored() -> ApiToken:
        async with db_session(settings) as db:
            return (await db.execute(select(ApiToken))).scalar_one()

    row = asyncio.run(stored())
    assert row.token_hash == hash_api_token(token) and token not in row.token_hash
    assert row.scopes == ["transcripts:read"] and row.name == "crm"


def test_create_token_refuses_unknown_scopes(settings: Settings) -> None:
    result = run(["create-token", "x", "--scope", "everything"], settings.data_dir)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_create_admin_reads_the_password_from_stdin(settings: Settings) -> None:
    result = run(["create-admin", "Ops@Example.com"], settings.data_dir, stdin="a long enough secret\n")
    assert result.returncode == 0, result.stderr

    async def stored() -> AdminUser:
        async with db_session(settings) as db:
            return (await db.execute(select(AdminUser))).scalar_one()

    admin = asyncio.run(stored())
    assert admin.email == "ops@example.com"
    assert verify_password("a long enough secret", admin.password_hash)
    again = run(["create-admin", "ops@example.com"], settings.data_dir, stdin="a long enough secret\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    short = run(["create-admin", "b@example.com"], settings.data_dir, stdin="short\n")
    assert short.returncode == 2 and "at least 12" in short.stderr


def test_flows_export_import_round_trip(settings: Settings, tmp_path: Path) -> None:
    exported = run(["flows", "export"], settings.data_dir)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert [f["slug"] for f in document["flows"]] == ["demo", "demo-iframe"]
    document["flows"][0]["display_name"] = "Renamed"
    document["flows"][0]["slug"] = "copy"
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(document))
    imported = run(["flows", "import", str(path)], settings.data_dir)
    assert imported.returncode == 0, imported.stderr
    listed = run(["flows", "list"], settings.data_dir).stdout
    assert "copy\tsocket\tsimulator\tenabled\tRenamed" in listed
    shown = json.loads(run(["flows", "show", "copy"], settings.data_dir).stdout)
    assert shown["flows"][0]["dpp_template"] == "demo-welcome"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('{"flows": [{"slug": "ok"}]}', "flows.0.display_name"),
        (
            '{"flows": [{"slug": "a", "display_name": "A", "client_id": "c", "flow_id": "f"},'
            ' {"slug": "b", "display_name": "B", "client_id": "c", "flow_id": "f",'
            ' "dpp_template": "missing"}]}',
            "unknown dpp_template",
        ),
    ],
)
def test_bad_import_changes_nothing(settings: Settings, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = run(["flows", "import", str(path)], settings.data_dir)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr

    async def slugs() -> list[str]:
        async with db_session(settings) as db:
            return list((await db.execute(select(Flow.slug).order_by(Flow.slug))).scalars())

    assert asyncio.run(slugs()) == ["demo", "demo-iframe"]


def test_every_command_has_help(tmp_path: Path) -> None:
    for command in ["serve", "migrate", "create-admin", "create-token", "flows", "vendor-sdk", "simulator"]:
        result = run([command, "--help"], tmp_path)
        assert result.returncode == 0 and "usage: avatar-bff" in result.stdout
