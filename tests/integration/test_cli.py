"""The `avatar-bff` command as an operator runs it, the environment as its config.

Commands run in-process through `server.cli.main`, as the installed script calls it; only the servers that
must be real processes (the demo stopped by SIGTERM, the simulator) are started as such.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.cli import main
from server.models import AdminUser, ApiToken, Flow
from server.sdk import PINS
from server.security.secrets_hashing import hash_api_token, verify_password
from server.settings import Settings
from tests.support import TEST_SECRET, db_session, eventually, free_port, stop_process, wait_until_up

SCRIPT = [sys.executable, "-c", "from server.cli import main; main()"]
COMMANDS = ["serve", "migrate", "create-admin", "create-token", "flows", "vendor-sdk", "simulator"]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


Cli = Callable[..., Ran]


def operator_environment(monkeypatch: pytest.MonkeyPatch, directory: Path, **env: str) -> None:
    """Only the AVATAR_BFF_* variables given, and a working directory of its own (no stray .env)."""
    for name in [name for name in os.environ if name.startswith("AVATAR_BFF_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(directory)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`avatar-bff ARGS` in production, with a secret and the data dir in tmp_path (as `settings` uses it)."""
    operator_environment(
        monkeypatch, tmp_path, AVATAR_BFF_DATA_DIR=str(tmp_path), AVATAR_BFF_SECRET_KEY=TEST_SECRET
    )

    def run(*args: str, stdin: str = "") -> Ran:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))  # piped, as from a script
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def test_invalid_settings_fail_with_one_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_BFF_LOG_LEVEL", "loud")
    result = cli("migrate")
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert "AVATAR_BFF_LOG_LEVEL" in result.err and "Traceback" not in result.err


def test_create_token_prints_it_alone_on_the_last_line_and_stores_a_hash(
    cli: Cli, settings: Settings
) -> None:
    result = cli("create-token", "crm", "--scope", "transcripts:read")
    assert result.code == 0, result.err
    token = result.out.strip().splitlines()[-1]
    assert token.startswith("abff_") and " " not in token

    async def stored() -> ApiToken:
        async with db_session(settings) as db:
            return (await db.execute(select(ApiToken))).scalar_one()

    row = asyncio.run(stored())
    assert row.token_hash == hash_api_token(token) and token not in row.token_hash
    assert row.scopes == ["transcripts:read"] and row.name == "crm"


def test_create_token_refuses_unknown_scopes(cli: Cli) -> None:
    result = cli("create-token", "x", "--scope", "everything")
    assert result.code == 2 and "invalid choice" in result.err


def test_the_first_admin_can_be_made_on_a_brand_new_data_dir(cli: Cli, tmp_path: Path) -> None:
    assert not (tmp_path / "avatar-bff.db").exists()  # nothing migrated yet: the command does it
    result = cli("create-admin", "first@example.com", "--role", "viewer", stdin="a long enough secret\n")
    assert result.code == 0, result.err
    assert "first@example.com created with role viewer" in result.out


def test_create_admin_reads_the_password_from_stdin(cli: Cli, settings: Settings) -> None:
    result = cli("create-admin", "Ops@Example.com", stdin="a long enough secret\n")
    assert result.code == 0, result.err

    async def stored() -> AdminUser:
        async with db_session(settings) as db:
            return (await db.execute(select(AdminUser))).scalar_one()

    admin = asyncio.run(stored())
    assert admin.email == "ops@example.com"
    assert verify_password("a long enough secret", admin.password_hash)[0]
    again = cli("create-admin", "ops@example.com", stdin="a long enough secret\n")
    assert again.code == 2 and "already exists" in again.err
    short = cli("create-admin", "b@example.com", stdin="short\n")
    assert short.code == 2 and "at least 12" in short.err


def test_flows_export_import_round_trip(cli: Cli, settings: Settings, tmp_path: Path) -> None:
    exported = cli("flows", "export")
    assert exported.code == 0, exported.err
    document = json.loads(exported.out)
    assert [f["slug"] for f in document["flows"]] == ["demo", "demo-iframe"]
    document["flows"][0]["display_name"] = "Renamed"
    document["flows"][0]["slug"] = "copy"
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(document))
    imported = cli("flows", "import", str(path))
    assert imported.code == 0, imported.err
    assert "copy\tsocket\tsimulator\tenabled\tRenamed" in cli("flows", "list").out
    shown = json.loads(cli("flows", "show", "copy").out)
    assert shown["flows"][0]["dpp_template"] == "demo-welcome"
    missing = cli("flows", "show", "nope")
    assert missing.code == 2 and "no flow with slug 'nope'" in missing.err


def test_flows_import_and_export_carry_a_templates_schema_and_variables(
    cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"user": {"type": "object", "required": ["first_name"]}},
    }
    variables = [
        {"name": "first_name", "type": "string", "required": True, "example": "Ada", "source": "query"}
    ]
    template = {"name": "greet", "body": {"user": {"first_name": "{{ visitor.first_name }}"}}}
    flow = {"slug": "greeter", "display_name": "G", "client_id": "c", "flow_id": "f", "dpp_template": "greet"}
    path = tmp_path / "flows.json"
    path.write_text(
        json.dumps(
            {"dpp_templates": [{**template, "schema": schema, "variables": variables}], "flows": [flow]}
        )
    )
    assert cli("flows", "import", str(path)).code == 0
    (exported,) = json.loads(cli("flows", "show", "greeter").out)["dpp_templates"]
    assert exported["schema"] == schema and exported["variables"] == variables
    schema["properties"]["user"]["properties"] = {"first_name": {"type": "integer"}}
    path.write_text(json.dumps({"dpp_templates": [{**template, "schema": schema}], "flows": [flow]}))
    refused = cli("flows", "import", str(path))
    assert refused.code == 2 and "the rendered DPP at $.user.first_name" in refused.err


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
def test_bad_import_changes_nothing(
    cli: Cli, settings: Settings, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = cli("flows", "import", str(path))
    assert result.code == 2 and message in result.err and "Traceback" not in result.err

    async def slugs() -> list[str]:
        async with db_session(settings) as db:
            return list((await db.execute(select(Flow.slug).order_by(Flow.slug))).scalars())

    assert asyncio.run(slugs()) == ["demo", "demo-iframe"]


def test_every_command_has_help(cli: Cli) -> None:
    assert "usage: avatar-bff" in cli("--help").out
    for command in COMMANDS:
        result = cli(command, "--help")
        assert result.code == 0 and f"usage: avatar-bff {command}" in result.out


def test_every_command_but_serve_runs_in_production_without_the_secret(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    operator_environment(
        monkeypatch, tmp_path, AVATAR_BFF_DATA_DIR=str(data), XDG_CACHE_HOME=str(tmp_path / "cache")
    )
    document = tmp_path / "shop.json"
    document.write_text(
        json.dumps({"flows": [{"slug": "shop", "display_name": "Shop", "client_id": "c1", "flow_id": "f1"}]})
    )
    checkout = tmp_path / "checkout"  # the SDK repository's layout, not its bytes
    for pin in PINS.values():
        (checkout / pin.repo_path).parent.mkdir(parents=True, exist_ok=True)
        (checkout / pin.repo_path).write_text("// not the SDK")

    results = {
        "migrate": cli("migrate"),
        "create-admin": cli("create-admin", "ops@example.com", stdin="a long enough secret\n"),
        "create-token": cli("create-token", "x", "--scope", "transcripts:read"),
        "flows import": cli("flows", "import", str(document)),
        "flows list": cli("flows", "list"),
        "flows show": cli("flows", "show", "shop"),
        "flows export": cli("flows", "export"),
    }
    for command, result in results.items():
        assert result.code == 0, f"{command}: {result.err}"
    assert results["create-token"].out.strip().splitlines()[-1].startswith("abff_")
    assert results["flows list"].out.startswith("shop\tsocket\tkaltura-us\tenabled\tShop")
    assert json.loads(results["flows show"].out)["flows"][0]["client_id"] == "c1"
    assert [f["slug"] for f in json.loads(results["flows export"].out)["flows"]] == ["shop"]

    vendored = cli("vendor-sdk", "--from", str(checkout))  # fails, but for its own reason
    assert vendored.code == 2 and "integrity mismatch" in vendored.err
    assert all("SECRET" not in result.err for result in [*results.values(), vendored])
    assert not list(data.glob("*secret*"))  # production: no dev secret was made up

    port = free_port()
    simulator = subprocess.Popen([*SCRIPT, "simulator", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        assert wait_until_up(f"http://127.0.0.1:{port}/_sim/health").status_code == 200
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)

    serve = cli("serve")
    assert serve.code == 2 and serve.err.strip().count("\n") == 0
    assert serve.err.startswith("avatar-bff: AVATAR_BFF_SECRET_KEY is required in production")


@dataclass(frozen=True)
class Demo:
    process: subprocess.Popen[bytes]
    health: str
    simulator_health: str


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """`avatar-bff serve --demo` in a process of its own, as `make run` starts it."""
    port, simulator_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_BFF_")}
    environment.update({"AVATAR_BFF_DATA_DIR": str(tmp_path), "AVATAR_BFF_ENVIRONMENT": "dev"})
    command = [*SCRIPT, "serve", "--demo", "--port", str(port), "--simulator-port", str(simulator_port)]
    process = subprocess.Popen(
        command, env=environment, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield Demo(
            process,
            f"http://127.0.0.1:{port}/healthz",
            f"http://127.0.0.1:{simulator_port}/_sim/health",
        )
    finally:
        stop_process(process)  # a kill would leave the demo's simulator running


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_demo_is_healthy_only_once_its_simulator_answers(demo: Demo) -> None:
    def healthy_and_simulator() -> tuple[bool, bool]:
        # Healthy first, then the simulator: had the server been up first, this could see (True, False).
        return answers(demo.health), answers(demo.simulator_health)

    observed = eventually(healthy_and_simulator, lambda seen: seen[0], timeout=30, interval=0.02)
    assert observed == (True, True)


def test_the_demo_stops_its_simulator_when_it_is_stopped(demo: Demo) -> None:
    wait_until_up(demo.health, timeout=30)
    demo.process.send_signal(signal.SIGTERM)  # as from `docker stop` or systemd
    demo.process.wait(timeout=20)
    with pytest.raises(httpx.ConnectError):  # nothing left listening on the simulator's port
        httpx.get(demo.simulator_health, timeout=2)


def test_serve_in_production_without_the_public_url_stops_with_one_line(cli: Cli) -> None:
    serve = cli("serve")
    assert serve.code == 2 and serve.err.strip().count("\n") == 0
    assert serve.err.startswith("avatar-bff: AVATAR_BFF_PUBLIC_URL is required in production")


def test_serve_with_migrations_off_leaves_the_schema_alone_and_is_not_ready(tmp_path: Path) -> None:
    # Several instances: `avatar-bff migrate` runs once per deploy and each `serve` skips it.
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_BFF_")}
    environment.update(
        {
            "AVATAR_BFF_DATA_DIR": str(tmp_path),
            "AVATAR_BFF_ENVIRONMENT": "dev",
            "AVATAR_BFF_MIGRATE_ON_START": "false",
        }
    )
    process = subprocess.Popen(
        [*SCRIPT, "serve", "--port", str(port)],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until_up(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503 and ready.json()["reason"].startswith("migrations not applied")
    finally:
        stop_process(process)
    assert process.returncode == 0  # a SIGTERM the server completed is a clean stop
