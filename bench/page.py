"""Hosted page views/s against a bare Starlette app sending the same bytes and headers, in one run.

    .venv/bin/python bench/page.py [ROUNDS] [SECONDS]

Two processes on loopback: (a) `avatar-bff serve` (uvicorn, one process, the demo flows seeded on a temp
SQLite, production settings) and (b) a bare Starlette app answering one captured page response verbatim.
wrk loads each with 32 connections, in alternating order, round after round, so both see the same machine.
The ratio (the median of the rounds') is what counts: the absolute figures move with whatever else the
machine is doing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.flows import demo_document
from tests.support import TEST_SECRET, free_port, wait_until_up

CLI = [sys.executable, "-c", "from server.cli import main; main()"]
CONNECTIONS = 32
PAGE = "/a/demo"
# Headers uvicorn writes itself (the bare app gets them the same way) or that differ per response anyway.
OWN_HEADERS = {"date", "server", "content-length"}


def bare_app_main(capture: str, port: int) -> None:
    """(b): one route answering the captured bytes and headers verbatim."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    captured = json.loads(Path(capture).read_text())
    body = captured["body"].encode()
    headers = captured["headers"]

    async def page(_request: Request) -> Response:
        return Response(body, headers=headers)

    app = Starlette(routes=[Route(PAGE, page)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def servers(data_dir: Path) -> Iterator[tuple[str, str]]:
    app_port, bare_port = free_port(), free_port()
    app_url, bare_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{bare_port}"
    env = {
        **os.environ,
        "AVATAR_BFF_ENVIRONMENT": "production",
        "AVATAR_BFF_DATA_DIR": str(data_dir),
        "AVATAR_BFF_SECRET_KEY": TEST_SECRET,
        "AVATAR_BFF_PUBLIC_URL": app_url,
        "AVATAR_BFF_LOG_LEVEL": "warning",
        # One client address sends everything here: the per-address limit would answer 429s.
        "AVATAR_BFF_PAGE_VIEWS_PER_SECOND": "1000000",
    }
    (data_dir / "flows.json").write_text(demo_document().model_dump_json())
    subprocess.run([*CLI, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*CLI, "flows", "import", str(data_dir / "flows.json")], env=env, check=True, capture_output=True
    )
    app = subprocess.Popen([*CLI, "serve", "--port", str(app_port)], env=env, stdout=subprocess.DEVNULL)
    bare = None
    try:
        wait_until_up(f"{app_url}/healthz")
        page = httpx.get(f"{app_url}{PAGE}")
        assert page.status_code == 200, page.text
        headers = {k: v for k, v in page.headers.items() if k.lower() not in OWN_HEADERS}
        capture = data_dir / "page.json"
        capture.write_text(json.dumps({"body": page.text, "headers": headers}))
        bare = subprocess.Popen(
            [sys.executable, __file__, "--bare", str(capture), str(bare_port)], stdout=subprocess.DEVNULL
        )
        wait_until_up(f"{bare_url}{PAGE}")
        yield app_url, bare_url
    finally:
        for process in (app, bare):
            if process is not None:
                process.terminate()
                process.wait()


def wrk(url: str, seconds: int) -> float:
    """Requests/s over `seconds` with CONNECTIONS connections; fails loudly on non-2xx answers."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url], check=True, capture_output=True, text=True
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url} answered errors under load:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_app_main(sys.argv[2], int(sys.argv[3]))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("bench/page.py needs wrk (apt-get install wrk; `make bench` installs it)")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    data_dir = Path(tempfile.mkdtemp(prefix="avatar-bff-bench-page-"))
    try:
        with servers(data_dir) as (app_url, bare_url):
            for url in (app_url, bare_url):  # warm up: imports, caches, the first connections
                wrk(f"{url}{PAGE}", 1)
            app_rates, bare_rates, ratios = [], [], []
            for n in range(rounds):
                # Each round loads both, in alternating order: a neighbour's burst of CPU lands on either.
                first_app = n % 2 == 1
                app_rate = wrk(f"{app_url}{PAGE}", seconds) if first_app else 0.0
                bare_rate = wrk(f"{bare_url}{PAGE}", seconds)
                app_rate = app_rate or wrk(f"{app_url}{PAGE}", seconds)
                app_rates.append(app_rate)
                bare_rates.append(bare_rate)
                ratios.append(app_rate / bare_rate)
                print(
                    f"round {n + 1}: hosted page {app_rate:.0f}/s, bare Starlette {bare_rate:.0f}/s,"
                    f" ratio {ratios[-1]:.2f}"
                )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    app_rate, bare_rate, ratio = (statistics.median(values) for values in (app_rates, bare_rates, ratios))
    print(
        f"page views ({CONNECTIONS} connections, one process each; medians of {rounds} x {seconds} s): "
        f"hosted page {app_rate:.0f}/s, bare Starlette {bare_rate:.0f}/s, ratio {ratio:.2f} (goal >= 0.5)"
    )


if __name__ == "__main__":
    main()
