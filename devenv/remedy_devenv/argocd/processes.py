"""Argo CD's repo-server and application-controller as local processes, plus their Redis.

Why here and not in remedy_devenv.services: they are two personalities of one multi-call
binary (chosen by ARGOCD_BINARY_NAME), they need the control plane's kubeconfig and each
other's ports, and they only make sense together. Everything listens on 127.0.0.1: the
repo-server is told ``--address``/``--metrics-address``; the controller's metrics listener
has no such flag, so scripts/build-argocd compiles it with 127.0.0.1 instead of 0.0.0.0.

The controller runs as its own ServiceAccount (install.CONTROLLER_USER, cluster-admin like
upstream) so the apiserver's audit log tells Argo CD's writes apart from everyone else's.
Per-resource health is persisted in the Application status (``--persist-resource-health``,
off by default since Argo CD 3.0) so tests can read each remedy object's health as Argo CD
computed it with remedy's Lua.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..cluster import ControlPlane
from ..services import RedisServer, ServiceError
from ..services.process import ManagedProcess
from ..testkit import HOST, free_ports
from . import install
from .install import CONTROLLER_SA, NAMESPACE, ArgoCDError, locate_binary

TOOLS = install.CACHE / "tools"


def _healthz(port: int) -> bool:
    with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as resp:
        return bool(resp.status == 200)


def tool_path() -> str:
    """PATH for the repo-server: git from the system, helm/kustomize built by scripts/build-tools."""
    extra = sorted(str(p.parent) for p in TOOLS.glob("*/helm")) + sorted(str(p.parent) for p in TOOLS.glob("*/kustomize"))
    return os.pathsep.join([*extra, os.environ.get("PATH", "/usr/bin:/bin")])


class _ArgoProcess(ManagedProcess):
    binary_name = ""

    def __init__(self, state_dir: Path, port: int, metrics_port: int, env: dict[str, str], args: list[str]) -> None:
        super().__init__(state_dir, port)
        self.metrics_port = metrics_port
        self.env = env
        self.args = args

    def command(self) -> list[str]:
        # `env` execs the binary in place (same pid) with the environment Argo CD reads.
        env = {**self.env, "ARGOCD_BINARY_NAME": self.binary_name, "PATH": tool_path(),
               "HOME": str(self.state_dir), "TMPDIR": str(self.state_dir / "tmp")}
        return ["env", *(f"{k}={v}" for k, v in env.items()), str(locate_binary()), *self.args]

    def prepare(self) -> None:
        (self.state_dir / "tmp").mkdir(parents=True, exist_ok=True)

    def is_ready(self) -> bool:
        return _healthz(self.metrics_port)


class RepoServer(_ArgoProcess):
    name = "argocd-repo-server"
    binary_name = "argocd-repo-server"


class Controller(_ArgoProcess):
    name = "argocd-application-controller"
    binary_name = "argocd-application-controller"


class ArgoCD:
    """Install + repo-server + controller + Redis in ``state_dir``; ``stop()`` ends only them."""

    def __init__(self, cp: ControlPlane, state_dir: Path, cm_settings: dict[str, str] | None = None) -> None:
        self.cp = cp
        self.state_dir = Path(state_dir).absolute()
        self.cm_settings = {"timeout.reconciliation": "60s", **(cm_settings or {})}
        self.redis: RedisServer | None = None
        self.repo_server: RepoServer | None = None
        self.controller: Controller | None = None
        self.ready_seconds = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "argocd-controller.kubeconfig"

    def start(self, timeout: float = 120.0) -> ArgoCD:
        began = time.monotonic()
        locate_binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        install.install(self.cp, self.cm_settings)
        self.cp.service_account_kubeconfig(NAMESPACE, CONTROLLER_SA, self.kubeconfig)
        try:
            self._start_processes(timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def _start_processes(self, timeout: float) -> None:
        last: Exception | None = None
        for _ in range(3):  # a port chosen free may be taken before it is bound: choose again
            password = secrets.token_urlsafe(12)
            redis_port, repo_port, repo_metrics, ctrl_metrics = free_ports(4)
            env = {"ARGOCD_FAKE_IN_CLUSTER": "true", "KUBECONFIG": str(self.kubeconfig),
                   "REDIS_PASSWORD": password, "ARGOCD_GPG_ENABLED": "false",
                   "ARGOCD_APPLICATION_CONTROLLER_PERSIST_RESOURCE_HEALTH": "true"}
            redis_addr = f"{HOST}:{redis_port}"
            try:
                self.redis = RedisServer(self.state_dir / "redis", redis_port, password=password)
                self.redis.start(timeout=30)
                self.repo_server = RepoServer(
                    self.state_dir / "repo-server", repo_port, repo_metrics,
                    {**env, "ARGOCD_PLUGINSOCKFILEPATH": str(self.state_dir / "repo-server" / "plugins")},
                    ["--address", HOST, "--port", str(repo_port), "--metrics-address", HOST,
                     "--metrics-port", str(repo_metrics), "--redis", redis_addr, "--disable-tls",
                     "--loglevel", "info", "--logformat", "text"])
                (self.state_dir / "repo-server" / "plugins").mkdir(parents=True, exist_ok=True)
                self.repo_server.start(timeout=timeout)
                self.controller = Controller(
                    self.state_dir / "controller", ctrl_metrics, ctrl_metrics, env,
                    ["--namespace", NAMESPACE, "--redis", redis_addr, "--repo-server", f"{HOST}:{repo_port}",
                     "--repo-server-plaintext", "--metrics-port", str(ctrl_metrics), "--app-resync", "60",
                     "--loglevel", "info", "--logformat", "text"])
                self.controller.start(timeout=timeout)
                return
            except ServiceError as exc:
                last = exc
                self.stop()
        raise ArgoCDError(f"Argo CD did not start: {last}")

    def stop(self) -> None:
        for proc in (self.controller, self.repo_server, self.redis):
            if proc is not None:
                proc.stop()

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- Applications ------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get_app(self, name: str) -> dict[str, Any]:
        res = self.cp.kubectl("-n", NAMESPACE, "get", "applications.argoproj.io", name, "-o", "json")
        obj: dict[str, Any] = json.loads(res.stdout)
        return obj

    def refresh(self, name: str, hard: bool = False) -> None:
        """Ask the controller to compare with git again now (hard: also drop the manifest cache)."""
        self.cp.kubectl("-n", NAMESPACE, "annotate", "--overwrite", "applications.argoproj.io", name,
                        f"argocd.argoproj.io/refresh={'hard' if hard else 'normal'}")

    def sync(self, name: str, revision: str = "HEAD", *, prune: bool = False, options: list[str] | None = None) -> None:
        """Start a sync operation the way `argocd app sync` does: by writing .operation."""
        op = {"operation": {"initiatedBy": {"username": "remedy-tests"},
                            "sync": {"revision": revision, "prune": prune, "syncOptions": options or []}}}
        self.cp.kubectl("-n", NAMESPACE, "patch", "applications.argoproj.io", name, "--type", "merge",
                        "-p", json.dumps(op))

    def wait_app(self, name: str, check: Any, timeout: float = 120.0, what: str = "") -> dict[str, Any]:
        """Poll the Application until ``check(app)`` is truthy; raise with its status otherwise."""
        deadline = time.monotonic() + timeout
        app: dict[str, Any] = {}
        while time.monotonic() < deadline:
            res = self.cp.kubectl("-n", NAMESPACE, "get", "applications.argoproj.io", name, "-o", "json", check=False)
            if res.returncode == 0:
                app = json.loads(res.stdout)
                if check(app):
                    return app
            time.sleep(0.3)
        status = json.dumps(app.get("status") or {}, indent=1)[:4000]
        raise AssertionError(f"Application {name}: {what or 'condition'} not reached after {timeout:.0f}s; "
                             f"status:\n{status}\ncontroller log:\n{self.controller.tail(20) if self.controller else ''}")
