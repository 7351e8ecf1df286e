"""The wheel as an operator gets it: built once, installed (not editable) into a fresh virtualenv, run from an
empty directory. Dependencies come from the lock files, hash-checked, as in the Dockerfile.

The tests share one virtualenv and run in file order: the plain install is checked first, then the simulator
extra is added to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.support import free_port, stop_process, wait_until_up

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
SIMULATOR_MODULES = ("aiortc", "av", "numpy", "PIL")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AVATAR_BFF_", "VIRTUAL_ENV", "PYTHON"))}


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs as an operator would: no project variables, no virtualenv of ours activated."""
    return subprocess.run(
        command, cwd=cwd, env=clean_environment(), capture_output=True, text=True, timeout=300, check=False
    )


def pip_install(venv: Path, *args: str) -> None:
    """Our own pip, installing into the other virtualenv (which has no pip of its own)."""
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    result = run([*command, "--quiet", "--no-compile", *args])
    assert result.returncode == 0, result.stderr


class Wheel:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

    def requirement(self, extras: str = "") -> str:
        """A requirements line for the wheel itself, hash included (the lock's hashes make pip demand one)."""
        return f"avatar-bff{extras} @ {self.path.as_uri()} --hash=sha256:{self.sha256}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    assert (ROOT / "static" / "vendor" / ".stamp").exists(), "static/vendor is missing: run `make setup`"
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    result = run([*command, "--wheel-dir", str(out), str(ROOT)])
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("avatar_bff-*.whl")
    return Wheel(path)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Wheel) -> Path:
    """A fresh virtualenv with the runtime lock and the wheel, no extras."""
    path = tmp_path_factory.mktemp("venv")
    assert run([sys.executable, "-m", "venv", "--without-pip", str(path)]).returncode == 0
    requirements = path / "requirements.txt"
    requirements.write_text(wheel.requirement() + "\n")
    pip_install(
        path, "--require-hashes", "-r", str(ROOT / "requirements" / "main.lock"), "-r", str(requirements)
    )
    return path


def test_a_plain_install_has_no_media_stack_and_says_what_the_simulator_needs(
    venv: Path, tmp_path: Path
) -> None:
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "avatar-bff")
    found = run(
        [
            python,
            "-c",
            "import importlib.util as u, server.app, server; print(server.__file__); "
            f"print([m for m in {SIMULATOR_MODULES!r} if u.find_spec(m)])",
        ],
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stderr  # the app imports without the simulator's dependencies
    location, modules = found.stdout.splitlines()
    assert Path(location).is_relative_to(venv), "the package must come from the wheel, not the checkout"
    assert modules == "[]"

    assert run([python, "-c", "import aiortc"], cwd=tmp_path).returncode != 0
    usage = run([cli, "--help"], cwd=tmp_path)
    assert usage.returncode == 0 and "serve" in usage.stdout and "simulator" in usage.stdout

    for command in (["simulator"], ["serve", "--demo", "--port", str(free_port())]):
        result = run([cli, *command], cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "pip install 'avatar-bff[simulator]'" in result.stderr


def unversioned(path: str) -> str:
    """/static/v/<hash>/js/a.js → /static/js/a.js: pages link static files under the tree's hash."""
    return re.sub(r"^/static/v/[0-9a-f]+/", "/static/", path)


class Assets(HTMLParser):
    """The /static/ files a page loads: its scripts and stylesheets, and those its config names."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: set[str] = set()
        self._in_config = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if tag in ("script", "link") and value.startswith("/static/"):
                self.paths.add(value)
        self._in_config = tag == "script" and attributes.get("id") == "avatar-config"

    def handle_data(self, data: str) -> None:
        if self._in_config:
            self.paths.update(re.findall(r'"(/static/[^"]+)"', json.dumps(json.loads(data))))
            self._in_config = False


@pytest.fixture
def demo(venv: Path, wheel: Wheel, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    requirements = venv / "simulator.txt"
    requirements.write_text(wheel.requirement("[simulator]") + "\n")
    pip_install(venv, "--constraint", str(ROOT / "requirements" / "dev.lock"), "-r", str(requirements))
    port, simulator_port = free_port(), free_port()
    command = [str(venv / "bin" / "avatar-bff"), "serve", "--demo"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--simulator-port", str(simulator_port)],
        cwd=tmp_path,
        env=clean_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process, f"http://127.0.0.1:{port}", simulator_port
    finally:
        stop_process(process)  # a kill would leave the demo's simulator running


def test_the_installed_wheel_serves_the_demo_with_all_its_assets_from_an_empty_directory(
    demo: tuple[subprocess.Popen[bytes], str, int], tmp_path: Path
) -> None:
    process, url, simulator_port = demo
    wait_until_up(f"http://127.0.0.1:{simulator_port}/_sim/health")
    wait_until_up(f"{url}/healthz")
    assert httpx.get(f"{url}/readyz").status_code == 200  # the wheel's migrations were applied

    assets = Assets()
    for page in ("/a/demo", "/a/demo-iframe", "/api/docs"):
        response = httpx.get(url + page)
        assert response.status_code == 200, page
        assets.feed(response.text)
    assert any(unversioned(path).startswith("/static/vendor/") for path in assets.paths)
    pending, seen = sorted(assets.paths), set()
    while pending:  # and what those files load in turn: sibling modules, stylesheets' fonts
        path = pending.pop()
        seen.add(path)
        response = httpx.get(url + path)
        assert response.status_code == 200, path
        if path.endswith(".js") and unversioned(path).startswith("/static/js/"):
            relative = re.findall(r"""from\s+['"](\.[^'"]+)['"]""", response.text)
        elif path.endswith(".css"):
            relative = [u for u in re.findall(r"""url\(['"]?([^'")]+)""", response.text) if ":" not in u]
        else:
            relative = []
        pending.extend(p for p in (urljoin(path, r) for r in relative) if p not in seen)
    served = {unversioned(p) for p in seen}
    assert {"/static/css/page.css", "/static/js/transcript-sender.js"} < served
    assert any(p.startswith("/static/vendor/katex/fonts/") for p in served)
    assert (tmp_path / "data").is_dir(), "the data directory is created where the operator runs it"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0  # a graceful stop, completed, is a clean exit
    with pytest.raises(httpx.ConnectError):  # its simulator stopped with it
        httpx.get(f"http://127.0.0.1:{simulator_port}/_sim/health", timeout=2)
