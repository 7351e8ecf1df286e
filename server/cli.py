"""The `avatar-bff` command: serve, migrate, admins and tokens, flows, SDK vendoring, simulator."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.util
import json
import logging.config
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from server import admins, api_tokens, flows, migrate
from server.db import Database
from server.errors import AppError
from server.flows import FlowImportError, FlowsDocument, demo_document
from server.sdk import DEFAULT_SDK_VERSION, SdkError, vendor
from server.settings import Settings, SettingsError, load_settings

T = TypeVar("T")
SIMULATOR_START_SECONDS = 30
# What the `simulator` extra installs: the simulator (and so `serve --demo`) needs all of them.
SIMULATOR_MODULES = ("aiortc", "av", "numpy", "PIL")


class CommandError(Exception):
    """A command failed for a reason the operator can fix; printed as one line."""


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on the database, migrated first (as `serve` does), so any command works on a new one."""
    migrate.upgrade(settings.effective_database_url)

    async def runner() -> T:
        db = Database(settings.effective_database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(runner())


def _require_simulator() -> None:
    missing = [name for name in SIMULATOR_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(
            f"the simulator needs the simulator extra (missing: {', '.join(missing)}):"
            " pip install 'avatar-bff[simulator]'"
        )


def cmd_serve(args: argparse.Namespace) -> None:
    if args.demo:
        _require_simulator()
        os.environ["AVATAR_BFF_DEMO"] = "true"
        os.environ.setdefault("AVATAR_BFF_SIMULATOR_URL", f"http://127.0.0.1:{args.simulator_port}")
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Off when `avatar-bff migrate` runs once per release (several instances); /readyz fails until it has.
    if settings.migrate_on_start:
        migrate.upgrade(settings.effective_database_url)
    simulator = None
    if settings.demo:
        _with_db(
            settings, lambda db: flows.import_document(db, demo_document(), settings.allowed_upstream_hosts)
        )
        simulator = _start_simulator(args.simulator_port)
        # uvicorn re-raises SIGTERM after its shutdown; as an exception it lets `finally` stop the simulator.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        if simulator is not None:
            # The server reports healthy only once a visitor's conversation can reach its upstream.
            _wait_for_simulator(simulator, settings.simulator_url)
            print(f"demo: http://{args.host}:{args.port}/a/demo and /a/demo-iframe")
        _serve(args, settings)
    finally:
        if simulator is not None:
            simulator.terminate()
            simulator.wait(timeout=10)


def _start_simulator(port: int) -> subprocess.Popen[bytes]:
    """The demo's upstream: the simulator in a child process, so it stays a stranger to the app."""
    command = [sys.executable, "-c", "from server.cli import main; main()", "simulator", "--port", str(port)]
    return subprocess.Popen(command)  # noqa: S603 - our own interpreter and module


def _wait_for_simulator(simulator: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + SIMULATOR_START_SECONDS
    while time.monotonic() < deadline:
        if simulator.poll() is not None:
            raise CommandError(f"the simulator stopped at start (exit code {simulator.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/_sim/health", timeout=1):  # noqa: S310 - our own http URL
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise CommandError(f"the simulator did not answer on {url} within {SIMULATOR_START_SECONDS} s")


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from server.logs import logging_config
    from server.open_files import raise_open_files_limit
    from server.relay.browser_websocket import WS_PROTOCOL
    from server.security.slow_clients import HTTP_PROTOCOL

    logging.config.dictConfig(logging_config(settings))  # uvicorn applies it again; this line logs first
    raise_open_files_limit()
    options: dict[str, Any] = dict(
        host=args.host,
        port=args.port,
        log_config=logging_config(settings),
        log_level=settings.log_level,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,  # only the balancer may say who the client is
        http=HTTP_PROTOCOL,  # httptools with a deadline for request headers
        ws=WS_PROTOCOL,  # uvicorn's default, keeping less per idle socket
        ws_max_size=4 * 1024 * 1024,
        ws_per_message_deflate=False,  # signaling is small JSON; deflate costs ~40 KB per idle socket
        # A request that never completes (a client that stops sending its body) must not hold a stop forever.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # then what still runs is cancelled
    )
    if args.reload or args.workers > 1:  # development, or uvicorn's own worker processes: its plain stop
        app = "server.app:create_app_from_env"
        uvicorn.run(
            app, factory=True, reload=args.reload, workers=None if args.reload else args.workers, **options
        )
        return
    from server.serving import DrainingServer

    server = DrainingServer(uvicorn.Config("server.app:create_app_from_env", factory=True, **options))
    # uvicorn raises SIGTERM again once it has stopped: a stop it completed is a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = load_settings(require_secret=False)
    migrate.upgrade(settings.effective_database_url, args.revision)
    print(f"database at {migrate.head_revision()}")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise CommandError("the passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_create_admin(args: argparse.Namespace) -> None:
    settings = load_settings(require_secret=False)
    email = admins.normalise_email(args.email)
    password = _read_password()
    created = _with_db(settings, lambda db: admins.create_admin(db, email, password, args.role))
    print(f"admin {created} created with role {args.role}")


def cmd_create_token(args: argparse.Namespace) -> None:
    settings = load_settings(require_secret=False)
    scopes = sorted(set(args.scope))
    token = _with_db(settings, lambda db: api_tokens.create_token(db, args.name, scopes))
    print(f"token {args.name!r} created with scopes {', '.join(scopes)}; it is shown only once:")
    print(token)


def cmd_flows(args: argparse.Namespace) -> None:
    settings = load_settings(require_secret=False)
    if args.action == "import":
        document = _load_document(Path(args.file))
        hosts = settings.allowed_upstream_hosts
        slugs = _with_db(settings, lambda db: flows.import_document(db, document, hosts))
        print(f"imported {len(slugs)} flow(s): {', '.join(slugs)}")
    elif args.action == "list":
        for flow in _with_db(settings, flows.list_flows):
            state = "enabled" if flow.enabled else "disabled"
            print(f"{flow.slug}\t{flow.sdk_mode}\t{flow.upstream}\t{state}\t{flow.display_name}")
    else:
        wanted = [args.slug] if args.action == "show" else (args.slug or None)
        exported = _with_db(settings, lambda db: flows.export_document(db, wanted))
        if args.action == "show" and not exported.flows:
            raise CommandError(f"no flow with slug {args.slug!r}")
        print(exported.model_dump_json(indent=2))


def _load_document(path: Path) -> FlowsDocument:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path} is not JSON: {exc}") from None
    try:
        return FlowsDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CommandError(
            f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)"
        ) from None


def cmd_vendor_sdk(args: argparse.Namespace) -> None:
    settings = load_settings(require_secret=False)
    vendor(args.version, settings.sdk_dir, Path(args.source) if args.source else None)
    print("pages now load the SDK from this server; the CDN is no longer in their CSP")


def cmd_simulator(args: argparse.Namespace) -> None:
    _require_simulator()
    import uvicorn

    from server.simulator import SimulatorConfig, create_app

    if not 0 < args.time_scale <= 1:
        raise CommandError("--time-scale must be above 0 and at most 1")
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    config = SimulatorConfig(
        public_url=public_url,
        max_sessions=args.max_sessions,
        conversation_seconds=args.conversation_seconds,
        time_scale=args.time_scale,
    )
    print(f"simulator: the local stand-in for the avatar service on {public_url}")
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-bff",
        description="Host Kaltura Conversational Avatar pages, relay their signaling, keep transcripts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the web server (applies migrations first, unless AVATAR_BFF_MIGRATE_ON_START=false)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (not sticky: see README)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    serve.add_argument(
        "--demo", action="store_true", help="dev settings, seed the demo flows, use the simulator"
    )
    serve.add_argument("--simulator-port", type=int, default=9100, help="port of the local simulator (demo)")
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.add_argument("--revision", default="head", help="target revision (default head)")
    mig.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("create-admin", help="create an admin user (password from stdin when piped)")
    admin.add_argument("email")
    admin.add_argument(
        "--role", choices=("admin", "viewer"), default="admin", help="viewer: reads only (default: admin)"
    )
    admin.set_defaults(func=cmd_create_admin)

    token = sub.add_parser("create-token", help="create a REST API token; prints it alone on the last line")
    token.add_argument("name", help="what the token is for, e.g. 'crm-export'")
    token.add_argument(
        "--scope", action="append", choices=api_tokens.SCOPES, required=True, help="repeat for more"
    )
    token.set_defaults(func=cmd_create_token)

    flows = sub.add_parser("flows", help="list, show, import or export flows (JSON)")
    flows_sub = flows.add_subparsers(dest="action", required=True, metavar="ACTION")
    flows_sub.add_parser("list", help="one line per flow")
    show = flows_sub.add_parser("show", help="one flow as JSON")
    show.add_argument("slug")
    imp = flows_sub.add_parser(
        "import", help="create or update flows and templates from a JSON file (all or none)"
    )
    imp.add_argument("file")
    exp = flows_sub.add_parser("export", help="print flows and their templates as JSON")
    exp.add_argument("slug", nargs="*", help="only these flows")
    flows.set_defaults(func=cmd_flows)

    sdk = sub.add_parser(
        "vendor-sdk", help="download the pinned Kaltura SDK files, verify them, serve them ourselves"
    )
    sdk.add_argument(
        "--version", default=DEFAULT_SDK_VERSION, help=f"SDK tag (default {DEFAULT_SDK_VERSION})"
    )
    sdk.add_argument(
        "--from", dest="source", help="read the files from a local checkout of the SDK repository"
    )
    sdk.set_defaults(func=cmd_vendor_sdk)

    sim = sub.add_parser(
        "simulator", help="run the local upstream simulator (stands in for Kaltura's service)"
    )
    sim.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=9100, help="port (default 9100)")
    sim.add_argument("--public-url", help="URL browsers use to reach it (default http://HOST:PORT)")
    sim.add_argument("--max-sessions", type=int, default=100, help="beyond this, callers hear 'no agent'")
    sim.add_argument("--conversation-seconds", type=float, default=600, help="time limit per conversation")
    sim.add_argument(
        "--time-scale", type=float, default=1.0, help="below 1 speeds every delay up (load and fault runs)"
    )
    sim.set_defaults(func=cmd_simulator)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (SettingsError, CommandError, SdkError, FlowImportError, AppError) as exc:
        print(f"avatar-bff: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
