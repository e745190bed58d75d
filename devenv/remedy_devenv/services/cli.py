"""`python -m remedy_devenv.services up|down|status [NAME...]` (what scripts/services runs):
each server with the defaults of docs/ports.md, overridable by REMEDY_* variables.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..testkit import HOST
from .alertmanager_server import AlertmanagerServer
from .postgres_server import PostgresServer
from .process import DEFAULT_STATE_DIR, ManagedProcess, ServiceError, _write_secret
from .prometheus_server import PrometheusServer
from .redis_server import RedisServer

# -- command line ----------------------------------------------------------------------
NAMES = ("redis", "postgres", "prometheus", "alertmanager")


def _env_port(var: str, default: int) -> int:
    return int(os.environ.get(var, default))


def build(name: str, root: Path) -> ManagedProcess:
    """The server `name` with the defaults of docs/ports.md (overridable by REMEDY_* env)."""
    d = root / name
    am_port = _env_port("REMEDY_AM_PORT", 19093)
    if name == "redis":
        return RedisServer(d, _env_port("REMEDY_REDIS_PORT", 16379), os.environ.get("REMEDY_REDIS_PASSWORD"))
    if name == "postgres":
        return PostgresServer(d, _env_port("REMEDY_PG_PORT", 15432), os.environ.get("REMEDY_PG_PASSWORD"))
    if name == "prometheus":
        metrics = _env_port("REMEDY_METRICS_PORT", 18081)
        port = _env_port("REMEDY_PROM_PORT", 19090)
        rules = [Path(p).read_text() for p in os.environ.get("REMEDY_PROM_RULE_FILES", "").split(":") if p]
        return PrometheusServer(
            d, port,
            scrape_configs=[("prometheus", [f"{HOST}:{port}"]), ("remedy", [f"{HOST}:{metrics}"])],
            rules=rules,
            alertmanager_url=f"http://{HOST}:{am_port}",
            scrape_interval=os.environ.get("REMEDY_PROM_SCRAPE_INTERVAL", "5s"),
            evaluation_interval=os.environ.get("REMEDY_PROM_EVAL_INTERVAL", "5s"),
        )  # fmt: skip
    if name == "alertmanager":
        token_file = Path(os.environ.get("REMEDY_WEBHOOK_TOKEN_FILE", str(d / "webhook-token")))
        if not token_file.exists():
            _write_secret(token_file, secrets.token_urlsafe(24) + "\n")
        webhook = _env_port("REMEDY_WEBHOOK_PORT", 18080)
        return AlertmanagerServer(
            d, am_port,
            webhook_url=os.environ.get("REMEDY_WEBHOOK_URL", f"http://{HOST}:{webhook}/alertmanager"),
            token_file=token_file,
            group_wait="1s", group_interval="5s", repeat_interval="5m",
        )  # fmt: skip
    raise ValueError(f"unknown service {name!r}; choose from {', '.join(NAMES)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(NAMES))
    parser.add_argument(
        "--state-dir", type=Path,
        default=Path(os.environ.get("REMEDY_STATE_DIR", str(DEFAULT_STATE_DIR))),
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    names: list[str] = list(args.names) or list(NAMES)
    if unknown := sorted(set(names) - set(NAMES)):
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if args.action == "down":
        names.reverse()
    rc = 0
    for name in names:
        server = build(name, args.state_dir)
        if args.action == "up":
            if server.running:
                print(f"{name}: already running (pid {server.pid()}) {_shown(server)}")
                continue
            t0 = time.monotonic()
            try:
                server.start(timeout=args.timeout)
            except ServiceError as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                rc = 1
                continue
            print(f"{name}: up in {time.monotonic() - t0:.1f}s (pid {server.pid()}) {_shown(server)}")
        elif args.action == "down":
            was = server.pid()
            server.stop()
            print(f"{name}: stopped (pid {was})" if was else f"{name}: not running")
        else:
            pid = server.pid()
            if pid is None:
                rc = 3
            print(f"{name}: {f'running (pid {pid})' if pid else 'stopped'} {_shown(server)} log={server.log_file}")
    return rc


def _shown(server: ManagedProcess) -> str:
    """The URL to print: passwords are replaced by the file that holds them."""
    if isinstance(server, PostgresServer):
        return f"{server.dsn.replace(urllib.parse.quote(server.password, safe=''), '***')} password-file={server.password_file}"
    if isinstance(server, RedisServer) and server.password:
        return f"redis://:***@{server.host}:{server.port}/0"
    if isinstance(server, AlertmanagerServer):
        return f"{server.url} webhook={server.webhook_url} token-file={server.token_file}"
    return server.url
