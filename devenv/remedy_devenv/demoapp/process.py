"""A demo role as a separate process (``python -m remedy_devenv.demoapp``): start, wait for
/health, restart (what the rollout bridge does when a Deployment rolls), stop; and the
command line that process runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from ..testkit import free_port
from .app import build_app
from .common import (
    DEFAULT_PORTS,
    ROLES,
    Options,
)


class DemoProcess:
    """A role in its own OS process, so the demo can "roll" it the way a Deployment would."""

    def __init__(self, role: str, port: int = 0, *, host: str = "127.0.0.1",
                 args: Sequence[str] = (), env: dict[str, str] | None = None,
                 log_path: str | None = None) -> None:
        self.role, self.host = role, host
        self.port = port or free_port(host)
        self.args = list(args)
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ if self.env is None else self.env)
        # works before `pip install -e`: the harness root is devenv/, the operator's operator/
        here = Path(__file__).resolve().parents[2]
        pkg_root = os.pathsep.join((str(here), str(here.parent / "operator")))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        cmd = [sys.executable, "-m", "remedy_devenv.demoapp", "--role", self.role,
               "--host", self.host, "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        if self.log_path:
            out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demoapp {self.role} exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/admin/stats", timeout=1).close()
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop(kill=True)
        raise TimeoutError(f"demoapp {self.role} not ready on {self.url} in {timeout}s")

    def stop(self, timeout: float = 10.0, kill: bool = False) -> int | None:
        """SIGTERM (graceful: orders persists its backlog) or SIGKILL (a crash)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> DemoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_args(argv: Sequence[str] | None) -> tuple[Options, str, int]:
    p = argparse.ArgumentParser(prog="python -m remedy_devenv.demoapp", description=sys.modules[__package__ or ""].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: the role's port in docs/ports.md")
    p.add_argument("--redis-url")
    p.add_argument("--state-file")
    p.add_argument("--token", help="gateway: DEMO_ADMIN_TOKEN; reconcile: CRON_SECRET")
    p.add_argument("--upstream", action="append", default=[], metavar="NAME=URL",
                   help="gateway breaker and the upstream its HALF_OPEN probe checks")
    p.add_argument("--probe-interval", type=float, default=0.5)
    p.add_argument("--breaker-open-s", type=float, default=0.0,
                   help="auto HALF_OPEN after this long; 0 = stays OPEN (stuck)")
    p.add_argument("--outbox-rate", type=float, default=20.0)
    p.add_argument("--outbox-max", type=float, default=5000.0)
    p.add_argument("--outbox-drain-rate", type=float, default=250.0)
    p.add_argument("--hold-mib", type=int, default=0, help="hold this much resident memory from start")
    a = p.parse_args(argv)
    opts = Options(role=a.role, redis_url=a.redis_url, state_file=a.state_file, token=a.token,
                   probe_interval_s=a.probe_interval, breaker_open_s=a.breaker_open_s,
                   outbox_rate=a.outbox_rate, outbox_max=a.outbox_max,
                   outbox_drain_rate=a.outbox_drain_rate, hold_mib=a.hold_mib)
    if a.upstream:
        opts.upstreams = dict(u.split("=", 1) for u in a.upstream)
    return opts, a.host, a.port or DEFAULT_PORTS[a.role]


def main(argv: Sequence[str] | None = None) -> None:
    opts, host, port = parse_args(argv)
    ballast = b"\x01" * (opts.hold_mib << 20)  # bytes(n) would be untouched zero pages
    if ballast:
        print(f"demoapp role={opts.role} holding {len(ballast) >> 20} MiB", flush=True)
    print(f"demoapp role={opts.role} listening on http://{host}:{port}", flush=True)
    web.run_app(build_app(opts), host=host, port=port, access_log=None, print=None)
