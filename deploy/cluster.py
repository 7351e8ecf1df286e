"""`make cluster`: the simulator, two `avatar-bff serve` instances on PostgreSQL and Redis, nginx in front.

Run from a source checkout (`python -m deploy.cluster`, or `make cluster`), in the foreground; Ctrl-C stops
everything. The failover test and the fault scripts start the same `Cluster`, so what they test is what an
operator runs. It lives in deploy/ rather than in the `avatar-bff` command because it drives things the
installed package does not ship: Debian's nginx and the template in deploy/nginx/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from server.flows import demo_document
from server.settings import load_settings

DEPLOY_DIR = Path(__file__).resolve().parent
TEMPLATE = DEPLOY_DIR / "nginx" / "avatar-bff.conf.template"
PLACEHOLDER = re.compile(r"\$\{(APP_1|APP_2|LISTEN)\}")
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/avatar_bff_cluster"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
INSTANCES = 2  # the template names two
START_SECONDS = 30
STOP_SECONDS = 15
CLI = ("-c", "from server.cli import main; main()")  # `avatar-bff`, with this interpreter


class ClusterError(Exception):
    """The cluster could not start; the message says what to fix."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_template(text: str, values: dict[str, str]) -> str:
    """Fill the template's ${APP_1}, ${APP_2}, ${LISTEN} as envsubst does; nginx's own $variables stay."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


@dataclass
class ClusterConfig:
    listen: str = "127.0.0.1:8080"
    database_url: str = field(
        default_factory=lambda: os.environ.get("AVATAR_BFF_DATABASE_URL") or DEFAULT_DATABASE_URL
    )
    redis_url: str = field(
        default_factory=lambda: os.environ.get("AVATAR_BFF_REDIS_URL") or DEFAULT_REDIS_URL
    )
    data_dir: Path = Path("data/cluster")
    # Extra settings for both instances (AVATAR_BFF_* names), e.g. higher caps for a load run.
    env: dict[str, str] = field(default_factory=dict)
    simulator_args: list[str] = field(default_factory=list)  # e.g. ["--time-scale", "0.05"]
    log_dir: Path | None = None  # None: the children write to this terminal
    nginx: str = "nginx"
    nginx_workers: int = 1


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    log: IO[bytes] | None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter, or nginx
            self.command,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log else None,
            start_new_session=True,  # Ctrl-C reaches the runner only, which stops the children in order
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Cluster:
    """Starts, watches and stops the cluster; `kill_instance` and `restart_simulator` make the faults."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.data_dir = self.config.data_dir.resolve()
        self.url = f"http://{self.config.listen}"
        self.simulator_port = free_port()
        self.instance_ports = [free_port() for _ in range(INSTANCES)]
        self._runtime = Path(tempfile.mkdtemp(prefix="avatar-bff-nginx-"))  # reachable by nginx's workers
        self._logs: list[IO[bytes]] = []
        self.simulator = self._child("simulator", self._simulator_command(), os.environ.copy())
        self.instances = [
            self._child(f"instance-{n}", self._instance_command(n), self._instance_env(n))
            for n in range(1, INSTANCES + 1)
        ]
        self.nginx = self._child("nginx", self._nginx_command(), os.environ.copy())

    # Commands and settings

    def _child(self, name: str, command: list[str], env: dict[str, str]) -> Child:
        log = None
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.config.log_dir / f"{name}.log").open("ab")
            self._logs.append(log)
        return Child(name, command, env, log)

    def _simulator_command(self) -> list[str]:
        port = str(self.simulator_port)
        return [sys.executable, *CLI, "simulator", "--port", port, *self.config.simulator_args]

    def instance_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.instance_ports[n - 1]}"

    def _instance_command(self, n: int) -> list[str]:
        return [
            sys.executable,
            *CLI,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.instance_ports[n - 1]),
        ]

    def _instance_env(self, n: int) -> dict[str, str]:
        env = os.environ.copy()
        env.update(
            {
                "AVATAR_BFF_ENVIRONMENT": "dev",  # one dev secret in data_dir: each reads the other's tokens
                "AVATAR_BFF_DATA_DIR": str(self.data_dir),
                "AVATAR_BFF_DATABASE_URL": self.config.database_url,
                "AVATAR_BFF_REDIS_URL": self.config.redis_url,
                "AVATAR_BFF_SIMULATOR_URL": f"http://127.0.0.1:{self.simulator_port}",
                "AVATAR_BFF_PUBLIC_URL": self.url,
                "AVATAR_BFF_INSTANCE_ID": str(n),  # the prefix nginx's map reads in Engine.IO session ids
                "AVATAR_BFF_FORWARDED_ALLOW_IPS": "127.0.0.1",  # nginx's address: only it names the client
            }
        )
        env.pop("AVATAR_BFF_DEMO", None)  # `serve --demo` would start a simulator of its own
        env.update(self.config.env)
        return env

    def _nginx_command(self) -> list[str]:
        conf = self.data_dir / "nginx.conf"
        return [self.config.nginx, "-e", "stderr", "-p", str(self._runtime), "-c", str(conf)]

    def write_nginx_config(self) -> Path:
        """The template filled for this cluster, inside a main config that runs nginx in the foreground."""
        site = self.data_dir / "avatar-bff.conf"
        values = {
            "LISTEN": self.config.listen,
            "APP_1": self.instance_url(1)[7:],
            "APP_2": self.instance_url(2)[7:],
        }
        site.write_text(render_template(TEMPLATE.read_text(), values))
        temp = self._runtime
        main = f"""daemon off;
worker_processes {self.config.nginx_workers};
pid {temp / "nginx.pid"};
error_log stderr warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    include {site};
}}
"""
        conf = self.data_dir / "nginx.conf"
        conf.write_text(main)
        return conf

    # Lifecycle

    def pid_file(self, n: int) -> Path:
        return self.data_dir / f"instance-{n}.pid"

    def start(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if shutil.which(self.config.nginx) is None:
            raise ClusterError("nginx is not installed: `make setup` installs Debian's nginx")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        prepare_database(self.config.database_url, self.data_dir)
        # The dev secret both instances sign page tokens with: made once, before either starts.
        load_settings(environment="dev", data_dir=self.data_dir)
        self.simulator.start()
        self._wait(self.simulator, f"http://127.0.0.1:{self.simulator_port}/_sim/health")
        for n, instance in enumerate(self.instances, start=1):
            instance.start()
            self.pid_file(n).write_text(f"{instance.pid}\n")
        for n, instance in enumerate(self.instances, start=1):
            self._wait(instance, f"{self.instance_url(n)}/healthz")
        self.write_nginx_config()
        self.nginx.start()
        self._wait(self.nginx, f"{self.url}/healthz")

    def _wait(self, child: Child, url: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if not child.running():
                code = child.process.returncode if child.process else None
                raise ClusterError(f"{child.name} stopped at start (exit code {code}); see its output")
            try:
                with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise ClusterError(f"{child.name} did not answer on {url} within {START_SECONDS} s")

    def stop(self) -> None:
        """nginx first (no new requests), then the instances (SIGTERM: they finish what they hold), the
        simulator last."""
        self.nginx.stop(signal.SIGQUIT)  # nginx's graceful stop
        for n, instance in enumerate(self.instances, start=1):
            instance.stop()
            self.pid_file(n).unlink(missing_ok=True)
        self.simulator.stop()
        for log in self._logs:
            log.close()
        shutil.rmtree(self._runtime, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # Faults

    def kill_instance(self, n: int) -> None:
        """SIGKILL instance n by the pid in its pid file, as an operator (or the OOM killer) would."""
        pid = int(self.pid_file(n).read_text())
        os.kill(pid, signal.SIGKILL)
        process = self.instances[n - 1].process
        if process is not None and process.pid == pid:
            process.wait()

    def restart_instance(self, n: int) -> None:
        instance = self.instances[n - 1]
        instance.stop()
        instance.start()
        self.pid_file(n).write_text(f"{instance.pid}\n")
        self._wait(instance, f"{self.instance_url(n)}/healthz")

    def restart_simulator(self, down_seconds: float = 0.0) -> None:
        """Stop the upstream (every relayed conversation loses it), then start it again on the same port."""
        self.simulator.stop()
        time.sleep(down_seconds)
        self.simulator.start()
        self._wait(self.simulator, f"http://127.0.0.1:{self.simulator_port}/_sim/health")

    def watch(self) -> None:
        """Block until Ctrl-C or SIGTERM, saying when a child stops (a killed instance is not an end)."""
        reported: set[str] = set()
        stop = False

        def on_signal(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop:
            for child in (self.simulator, *self.instances, self.nginx):
                if not child.running() and child.name not in reported:
                    reported.add(child.name)
                    print(f"cluster: {child.name} stopped", file=sys.stderr, flush=True)
            time.sleep(0.2)


def prepare_database(url: str, data_dir: Path) -> None:
    """Create the cluster's PostgreSQL database when missing, then migrate it and import the demo flows with
    `avatar-bff flows import`, as an operator would."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.database:
        asyncio.run(_create_database(url))
    flows = data_dir / "demo-flows.json"
    flows.write_text(demo_document().model_dump_json(indent=2))
    env = {**os.environ, "AVATAR_BFF_DATABASE_URL": url, "AVATAR_BFF_DATA_DIR": str(data_dir)}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, *CLI, "flows", "import", str(flows)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ClusterError(f"importing the demo flows failed: {done.stderr.strip() or done.stdout.strip()}")


async def _create_database(url: str) -> None:
    import asyncpg

    parsed = make_url(url)
    name = parsed.database
    maintenance = parsed.set(drivername="postgresql", database="postgres")
    try:
        connection = await asyncpg.connect(maintenance.render_as_string(hide_password=False))
    except (OSError, asyncpg.PostgresError) as exc:
        raise ClusterError(f"cannot reach PostgreSQL at {parsed.host}:{parsed.port or 5432}: {exc}") from None
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="nginx's address (default 127.0.0.1:8080)")
    parser.add_argument(
        "--data-dir", default="data/cluster", help="pid files, nginx config (default data/cluster)"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", args.listen):
        parser.error("--listen takes HOST:PORT")
    cluster = Cluster(ClusterConfig(listen=args.listen, data_dir=Path(args.data_dir)))
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # stopped while starting: what had started is stopped already
        raise SystemExit(130) from None
    print(
        f"cluster: {cluster.url}/a/demo through nginx; instances {cluster.instance_url(1)} and"
        f" {cluster.instance_url(2)} (pids in {cluster.data_dir}/instance-<n>.pid); Ctrl-C stops everything",
        flush=True,
    )
    try:
        cluster.watch()
    finally:
        print("cluster: stopping", file=sys.stderr, flush=True)
        cluster.stop()


if __name__ == "__main__":
    main()
