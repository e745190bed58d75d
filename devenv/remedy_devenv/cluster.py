"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

Why this exists: the operator must be exercised against real API semantics (RBAC, status
subresources, Deployment rollouts, garbage collection, namespace finalization, conflicts),
and there is no Docker or kind here. The binaries come from scripts/build-control-plane.
There is no scheduler and no container runtime; remedy_devenv.kubelet stands in for the
kubelet (registers a node, binds pods, writes pod status, finishes pod deletion).

Used by tests/fixtures/cluster.py, scripts/cluster and the demo.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

REPO = Path(os.environ.get("REMEDY_REPO") or Path(__file__).resolve().parents[2])
DEFAULT_STATE_DIR = Path.home() / ".cache" / "remedy" / "run" / "cluster"
SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Extra users for RBAC tests: name -> groups. They get no permissions beyond discovery.
TEST_USERS: dict[str, tuple[str, ...]] = {
    "alice": ("remedy-users",),
    "bob": ("remedy-viewers",),
}
# The identity tests give the operator (static token, system:masters like admin) so the audit
# log can tell the operator's writes from the test's own setup writes (remedy_devenv.audit).
OPERATOR_USER = "remedy-operator"
# A real node (remedy_devenv.node) adds kube-scheduler, containerd and kubelet; stop() goes
# through this in reverse, so the kubelet stops before containerd.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "fake-kubelet",
              "kube-scheduler", "containerd", "kubelet")
# Audit policy: Metadata level (no bodies) for writes to the workload resources remedy acts on,
# nothing else, so auditing costs the apiserver little. This is the duplicate witness of
# remedy_devenv.audit: it counts what reached the API server, not what the operator believes.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete"]
  resources:
  - group: "apps"
    resources: ["deployments", "deployments/scale", "statefulsets", "statefulsets/scale",
                "daemonsets", "replicasets"]
  - group: ""
    resources: ["pods", "pods/resize", "pods/eviction"]
- level: None
"""


class ClusterError(RuntimeError):
    """The control plane could not be started or queried."""


def _env_port(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def locate_binaries() -> Path:
    """Return the directory with etcd, kube-apiserver, kube-controller-manager, kubectl."""
    env = os.environ.get("REMEDY_K8S_BIN")
    if env:
        return Path(env)
    script = REPO / "scripts" / "build-control-plane"
    out = subprocess.run([str(script)], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise ClusterError(f"{script} failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed: {res.stderr}")


_CA_CNF = """[req]
distinguished_name = dn
[dn]
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""
_SERVER_EXT = """basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
"""


def generate_pki(pki: Path) -> None:
    """CA, apiserver serving cert and the service-account key, once per state dir.

    The openssl CLI is used (always present on Debian; the `cryptography` package is not a
    dependency of the project).
    """
    if (pki / "apiserver.crt").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    (pki / "ca.cnf").write_text(_CA_CNF)
    (pki / "server.ext").write_text(_SERVER_EXT)
    for key in ("ca.key", "apiserver.key", "sa.key"):
        _openssl("genrsa", "-out", key, "2048", cwd=pki)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=remedy-local-ca",
             "-days", "3650", "-config", "ca.cnf", "-extensions", "ext", "-out", "ca.crt", cwd=pki)
    _openssl("req", "-new", "-key", "apiserver.key", "-subj", "/CN=kube-apiserver",
             "-config", "ca.cnf", "-out", "apiserver.csr", cwd=pki)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "server.ext",
             "-out", "apiserver.crt.tmp", cwd=pki)
    (pki / "apiserver.crt.tmp").rename(pki / "apiserver.crt")


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str,
                     user: str, namespace: str = "default") -> Path:
    """Write a self-contained token kubeconfig (CA inlined)."""
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "remedy-local",
        "clusters": [{"name": "remedy-local",
                      "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "remedy-local",
                      "context": {"cluster": "remedy-local", "user": user, "namespace": namespace}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, PermissionError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclasses.dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ the fake kubelet) in `state_dir`."""

    state_dir: Path = DEFAULT_STATE_DIR
    etcd_port: int = dataclasses.field(default_factory=lambda: _env_port("REMEDY_ETCD_PORT", 23790))
    etcd_peer_port: int = 0  # 0: etcd_port + 10 (23800 by default)
    apiserver_port: int = dataclasses.field(
        default_factory=lambda: _env_port("REMEDY_APISERVER_PORT", 16443))
    controller_manager_port: int = dataclasses.field(
        default_factory=lambda: _env_port("REMEDY_KCM_PORT", 16444))
    fake_kubelet: bool = True
    # containerd + kubelet + kube-scheduler instead of the fake kubelet (remedy_devenv.node).
    real_node: bool = False
    bin_dir: Path | None = None
    # False: MutatingAdmissionPolicy off and admissionregistration.k8s.io/v1beta1 not served, as
    # on a default 1.34/1.35 cluster (remedy's validating-only admission mode, issue 20).
    mutating_admission: bool = True
    ready_seconds: float = 0.0  # measured by the last start()
    _procs: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser().resolve()
        if not self.etcd_peer_port:
            self.etcd_peer_port = self.etcd_port + 10

    # -- paths and credentials -------------------------------------------------------------
    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """JSON-lines audit log of the apiserver (writes to workloads only, see AUDIT_POLICY)."""
        return self.state_dir / "logs" / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def _tokens(self) -> dict[str, str]:
        path = self.state_dir / "tokens.csv"
        if not path.exists():
            rows = [("admin", "system:masters")] + [(u, ",".join(g)) for u, g in TEST_USERS.items()]
            path.write_text("".join(f'{secrets.token_hex(24)},{u},{u},"{g}"\n' for u, g in rows))
            path.chmod(0o600)
        tokens = {line.split(",")[1]: line.split(",")[0]
                  for line in path.read_text().splitlines() if line}
        if OPERATOR_USER not in tokens:  # state dirs made before the user existed
            with path.open("a") as f:
                f.write(f'{secrets.token_hex(24)},{OPERATOR_USER},{OPERATOR_USER},"system:masters"\n')
            return self._tokens()
        return tokens

    def user_token(self, user: str) -> str:
        """Static bearer token of `admin` or one of TEST_USERS."""
        return self._tokens()[user]

    def user_kubeconfig(self, user: str, path: Path | None = None) -> Path:
        """Kubeconfig authenticating as `user` (admin or one of TEST_USERS)."""
        path = path or self.state_dir / f"{user}.kubeconfig"
        return write_kubeconfig(path, self.server, self.pki / "ca.crt", self.user_token(user), user)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> ControlPlane:
        """Start everything and wait until usable. Kills leftovers of this state dir first."""
        self.stop()
        bins = self.bin_dir = self.bin_dir or locate_binaries()
        for sub in ("logs", "pids", "etcd", "kcm-certs", "apiserver-certs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        generate_pki(self.pki)
        self._tokens()
        (self.state_dir / "cluster.json").write_text(json.dumps(
            {"etcd_port": self.etcd_port, "etcd_peer_port": self.etcd_peer_port,
             "apiserver_port": self.apiserver_port,
             "controller_manager_port": self.controller_manager_port}))
        self.user_kubeconfig("admin", self.admin_kubeconfig)
        began = time.monotonic()
        try:
            self._start_components(bins, began + timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def _start_components(self, bins: Path, deadline: float) -> None:
        s, p = self.state_dir, self.pki
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", [
            str(bins / "etcd"), "--name=remedy", f"--data-dir={s / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=remedy={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait("etcd", lambda: b"true" in self._get(f"{etcd_url}/health"), deadline)
        (s / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._spawn("kube-apiserver", [
            str(bins / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            f"--secure-port={self.apiserver_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--cert-dir={s / 'apiserver-certs'}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}", f"--token-auth-file={s / 'tokens.csv'}",
            "--authorization-mode=RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={p / 'sa.key'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            # Like envtest: no kubelet mounts tokens, and pods must not be rejected while the
            # controller-manager has not yet created a new namespace's `default` account.
            "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true",
            "--profiling=false",
            # A real node (remedy_devenv.node) is named remedy-node-0, which no DNS resolves:
            # reach its kubelet (kubectl logs/exec) by the address it reports.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            # remedy's admission policies (deploy/admission) stamp the requesting user with a
            # MutatingAdmissionPolicy: beta and off by default in 1.34/1.35 (checked on the
            # v1.35.4 binary: "MutatingAdmissionPolicy=true|false (BETA - default=false)"; the
            # admission plugin itself is in the default set). mutating_admission=False turns
            # both off explicitly: the validating-only mode's cluster.
            *self._admission_flags(),
            f"--audit-policy-file={s / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            # blocking: the event is written while the request is served, so a count taken
            # right after the response sees it.
            "--audit-log-format=json", "--audit-log-mode=blocking",
        ])
        self._wait("kube-apiserver", lambda: self._get(f"{self.server}/readyz") == b"ok", deadline)
        kc = str(self.admin_kubeconfig)
        self._spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}", f"--cluster-signing-key-file={p / 'ca.key'}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            f"--secure-port={self.controller_manager_port}", "--bind-address=127.0.0.1",
            f"--cert-dir={s / 'kcm-certs'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Nothing renews the fake node's Lease, so node lifecycle would taint it
            # unreachable and evict every pod after ~5 minutes. A real kubelet does, and needs
            # it: it lifts the not-ready taint the kubelet registers with.
            "--controllers=*" if self.real_node else "--controllers=*,-node-lifecycle-controller",
        ])
        self._wait("kube-controller-manager",
                   lambda: self._get(f"https://127.0.0.1:{self.controller_manager_port}/healthz",
                                     verify=False) == b"ok", deadline)
        # RBAC bootstrap done and controllers running: the SA controller made default/default.
        self._wait("kube-controller-manager",
                   lambda: self.kubectl("-n", "default", "get", "serviceaccount", "default",
                                        check=False).returncode == 0, deadline)
        if self.real_node:
            from .node import Node
            Node(self).start(deadline)
        elif self.fake_kubelet:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [str(REPO / "operator"), os.environ.get("PYTHONPATH")])))
            self._spawn("fake-kubelet", [sys.executable, "-m", "remedy_devenv.kubelet",
                                         f"--kubeconfig={kc}"], env=env)
            self._wait("fake-kubelet", lambda: self.kubectl(
                "get", "node", "remedy-node-0", check=False).returncode == 0, deadline)

    def _admission_flags(self) -> list[str]:
        on = "true" if self.mutating_admission else "false"
        return [f"--feature-gates=MutatingAdmissionPolicy={on}",
                f"--runtime-config=admissionregistration.k8s.io/v1beta1={on}"]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every component of this state dir (own children or from pid files), then SIGKILL."""
        pids: dict[str, int] = {}
        for name in reversed(COMPONENTS):
            pidfile = self.state_dir / "pids" / f"{name}.pid"
            if not pidfile.exists():
                continue
            pid = int(pidfile.read_text() or 0)
            pidfile.unlink()
            try:  # a stale pid file may name a recycled pid: check it is ours
                mine = str(self.state_dir) in Path(f"/proc/{pid}/cmdline").read_text()
                if mine and _alive(pid):
                    os.killpg(pid, signal.SIGTERM)
                    pids[name] = pid
            except (OSError, ProcessLookupError):
                continue
            if name in pids and name != "etcd":  # stop clients before their server goes away
                self._reap(name, pid, grace)
        for name, pid in pids.items():
            self._reap(name, pid, grace)
        self._procs.clear()
        if (self.state_dir / "node").is_dir():  # pod processes, mounts, cgroups, bridge
            from .node import Node
            Node(self).cleanup()

    def _reap(self, name: str, pid: int, grace: float) -> None:
        deadline = time.monotonic() + grace
        proc = self._procs.get(name)
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc is not None else not _alive(pid):
                return
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc is not None:
            proc.wait(5)

    def status(self) -> dict[str, bool]:
        """Which components of this state dir are running (from pid files)."""
        out = {}
        for name in COMPONENTS:
            pidfile = self.state_dir / "pids" / f"{name}.pid"
            out[name] = pidfile.exists() and _alive(int(pidfile.read_text() or 0))
        return out

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.state_dir / "logs" / f"{name}.log", "ab") as log:
            log.write(f"\n=== {time.strftime('%FT%T')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.state_dir, env=env)
        self._procs[name] = proc
        (self.state_dir / "pids" / f"{name}.pid").write_text(str(proc.pid))

    def _wait(self, name: str, check: Callable[[], bool], deadline: float) -> None:
        last: object = None
        while time.monotonic() < deadline:
            for pname, proc in self._procs.items():
                if proc.poll() is not None:
                    log = self.state_dir / "logs" / f"{pname}.log"
                    raise ClusterError(f"{pname} exited with {proc.returncode}; "
                                       f"last lines of {log}:\n{_tail(log)}")
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet; keep the last error
                last = exc
            time.sleep(0.2)
        log = self.state_dir / "logs" / f"{name}.log"
        raise ClusterError(f"{name} not ready in time (last error: {last}); "
                           f"last lines of {log}:\n{_tail(log)}")

    def _get(self, url: str, verify: bool = True) -> bytes:
        req = urllib.request.Request(url)
        ctx = None
        if url.startswith("https"):
            if verify:
                ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
                req.add_header("Authorization", f"Bearer {self.user_token('admin')}")
            else:
                ctx = ssl._create_unverified_context()  # kcm's self-signed health endpoint
        with urllib.request.urlopen(req, timeout=3, context=ctx) as resp:
            body: bytes = resp.read()
            return body

    # -- clients ---------------------------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster (as admin unless `kubeconfig` is given)."""
        if self.bin_dir is None:
            self.bin_dir = locate_binaries()
        kubectl = self.bin_dir / "kubectl"
        res = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
                              *args], input=input, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path,
                                   duration: str = "24h") -> Path:
        """Kubeconfig for ServiceAccount namespace/name (created if missing), TokenRequest token."""
        for kind, args in (("namespace", (namespace,)),
                           ("serviceaccount", ("-n", namespace, name))):
            if self.kubectl("get", kind, *args, check=False).returncode != 0:
                self.kubectl("create", kind, *args)
        token = self.kubectl("-n", namespace, "create", "token", name,
                             f"--duration={duration}").stdout.strip()
        return write_kubeconfig(Path(path), self.server, self.pki / "ca.crt", token,
                                f"system:serviceaccount:{namespace}:{name}", namespace)


def from_state_dir(state_dir: Path) -> ControlPlane:
    """A ControlPlane handle for a state dir, with the ports it was last started with."""
    cfg = Path(state_dir).expanduser() / "cluster.json"
    ports = json.loads(cfg.read_text()) if cfg.exists() else {}
    return ControlPlane(state_dir=Path(state_dir), **ports)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "env", "status"))
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("REMEDY_STATE_DIR") or DEFAULT_STATE_DIR))
    parser.add_argument("--fresh", action="store_true", help="up/down: wipe etcd data and certs")
    parser.add_argument("--no-kubelet", action="store_true", help="up: no fake kubelet")
    parser.add_argument("--no-mutating-admission", action="store_true",
                        help="up: MutatingAdmissionPolicy off and admissionregistration v1beta1 not served "
                             "(apply deploy/admission/validating only)")
    parser.add_argument("--real-node", action="store_true",
                        help="up: containerd + kubelet + kube-scheduler instead of the fake kubelet")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).expanduser().resolve()
    if args.command == "up":
        if args.fresh:
            from_state_dir(state).stop()
            shutil.rmtree(state, ignore_errors=True)
        cp = ControlPlane(state_dir=state, fake_kubelet=not args.no_kubelet,
                          mutating_admission=not args.no_mutating_admission)
        cp.real_node = args.real_node or os.environ.get("REMEDY_REAL_NODE") == "1"
        try:
            cp.start()
        except ClusterError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"control plane ready in {cp.ready_seconds:.1f}s at {cp.server}; logs in {state}/logs",
              file=sys.stderr)
        print(f"export KUBECONFIG={cp.admin_kubeconfig}")
    elif args.command == "down":
        from_state_dir(state).stop()
        if args.fresh:
            shutil.rmtree(state, ignore_errors=True)
    elif args.command == "env":
        print(f"export KUBECONFIG={state / 'admin.kubeconfig'}")
    else:
        cp = from_state_dir(state)
        running = cp.status()
        for name, up in running.items():
            print(f"{name:24} {'running' if up else 'stopped'}")
        try:
            ok = cp._get(f"{cp.server}/readyz") == b"ok"
        except Exception:  # noqa: BLE001
            ok = False
        print(f"{'apiserver /readyz':24} {'ok' if ok else 'unreachable'} ({cp.server})")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
