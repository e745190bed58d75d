"""A real node for the local control plane: containerd + runc + kubelet, and kube-scheduler.

Why this exists: the fake kubelet (remedy_devenv.kubelet) only writes pod status, so an OOM
kill, a restart or a rollout it reports is a simulation. This node runs containers for
real: the kernel enforces memory limits and kills, the kubelet reports what containerd saw
(`OOMKilled`, restart counts), new ReplicaSets get new processes.

Everything lives under `<cluster state dir>/node` and stays on this machine:
* containerd (Debian package) with its own root, state, socket and CNI config; the CRI
  plugin's sandbox image is the locally built pause image (scripts/build-node);
* pods get addresses on a private bridge (`rmd<hash>`, a free 10.244.N.0/24) whose host side
  is created here; no default route is given to pods, no masquerade and no forwarding is
  enabled, so pod traffic can reach this host and other pods only;
* kubelet (cgroup v1 needs `failCgroupV1: false`; cgroupfs driver) under its own cgroup root,
  authenticated by a client certificate from the cluster CA as system:node:<name>; its API
  (logs, exec) listens on the bridge address only;
* kube-scheduler binds pods (as the cluster admin, no leader election).

Binaries: kubelet and kube-scheduler from scripts/build-node (same Kubernetes version as the
control plane), containerd/runc/CNI plugins from scripts/install-deps.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import ControlPlane

NODE_NAME = "remedy-node-0"
NODE_COMPONENTS = ("kube-scheduler", "containerd", "kubelet")  # start order
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_V1 = Path("/sys/fs/cgroup")
POD_SUBNETS = ipaddress.IPv4Network("10.244.0.0/16")
# Machine-wide kernel settings the kubelet rewrites at start (setupKernelTunables: overcommit
# "always", reboot 10 s after a panic, panic on oops, key quotas); its only alternative is
# refusing to start. A development node must not leave the machine changed: they are read
# before the kubelet starts and written back once it is up (it sets them only at start).
KUBELET_START_LOCK = "/run/remedy-kubelet-start.lock"
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


class NodeError(RuntimeError):
    """The real node could not be started (missing package, kubelet refused, not Ready)."""


IMAGES = ("pause", "memhog")  # built by scripts/build-node, imported into every node


def images_dir() -> Path:
    cache = Path(os.environ.get("REMEDY_CACHE") or Path.home() / ".cache" / "remedy")
    return cache / "images"


def image_name(image: str) -> str:
    """The containerd name of a locally built image: `<name>.tar` links to `<name>-<tag>.tar`."""
    target = Path(os.path.realpath(images_dir() / f"{image}.tar"))
    return f"remedy.local/{image}:{target.stem.removeprefix(image + '-')}"


def locate_node() -> Path:
    """The bin dir with kubelet + kube-scheduler; builds them and the images if needed."""
    repo = Path(os.environ.get("REMEDY_REPO") or Path(__file__).resolve().parents[2])
    env = os.environ.get("REMEDY_NODE_BIN")
    if env:
        return Path(env)
    script = repo / "scripts" / "build-node"
    out = subprocess.run([str(script)], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise NodeError(f"{script} failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _read_sysctls() -> dict[str, str]:
    out = {}
    for key in KUBELET_SYSCTLS:
        try:
            out[key] = (Path("/proc/sys") / key).read_text().strip()
        except OSError:
            continue
    return out


def _restore_sysctls(saved: dict[str, str]) -> None:
    for key, value in saved.items():
        path = Path("/proc/sys") / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError:
            continue


def _cgroup_subsystems() -> list[Path]:
    """The cgroup v1 hierarchies the kubelet uses (named hierarchies such as systemd too)."""
    if (CGROUP_V1 / "cgroup.controllers").exists():
        return [CGROUP_V1]  # cgroup v2: one tree
    return sorted(p for p in CGROUP_V1.iterdir()
                  if p.is_dir() and not p.is_symlink() and p.name != "unified")


def _remove_cgroup_tree(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (cgroupfs dirs cannot be rm -r'd)."""
    if not path.is_dir():
        return
    for root, dirs, _ in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


@dataclasses.dataclass
class Node:
    """containerd + kubelet + kube-scheduler for one ControlPlane, in `<state dir>/node`."""

    cp: ControlPlane
    name: str = NODE_NAME
    bin_dir: Path | None = None

    # -- identity derived from the state dir, so `stop` can clean up after a crash ---------
    @property
    def dir(self) -> Path:
        return self.cp.state_dir / "node"

    @property
    def tag(self) -> str:
        return hashlib.sha256(str(self.cp.state_dir).encode()).hexdigest()[:8]

    @property
    def bridge(self) -> str:
        return f"rmd{self.tag}"  # <= 15 characters (IFNAMSIZ)

    @property
    def cgroup_root(self) -> str:
        return f"/remedy-{self.tag}"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    # -- start ------------------------------------------------------------------------------
    def start(self, deadline: float) -> None:
        """Start containerd, kubelet and kube-scheduler; return when the node is Ready."""
        for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} not found: run scripts/install-deps (Debian containerd, runc)")
        if not (CNI_BIN_DIR / "bridge").exists():
            raise NodeError(f"{CNI_BIN_DIR}/bridge missing: install containernetworking-plugins")
        if self.bin_dir is None:
            self.bin_dir = locate_node()
        for sub in ("containerd", "cni", "kubelet", "pod-logs", "pki"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        subnet = self._setup_bridge()
        ports = {"kubelet_port": _free_port(), "kubelet_healthz_port": _free_port(),
                 "scheduler_port": _free_port()}
        (self.dir / "node.json").write_text(json.dumps({"subnet": str(subnet), **ports}))
        gateway = str(next(subnet.hosts()))
        self._write_cni(subnet, gateway)
        self._client_cert()
        self._start_containerd(deadline)
        self._start_scheduler(ports["scheduler_port"], deadline)
        self._start_kubelet(gateway, ports, deadline)

    def _setup_bridge(self) -> ipaddress.IPv4Network:
        """The host side of the pod network: a bridge with the .1 of a free /24."""
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)  # a leftover
        routes = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
        used = {ipaddress.IPv4Network(m, strict=False)
                for m in re.findall(r"(\d+\.\d+\.\d+\.\d+/\d+)", routes)}
        start = int(self.tag, 16) % 250
        for i in range(250):
            subnet = list(POD_SUBNETS.subnets(new_prefix=24))[(start + i) % 250 + 1]
            if not any(subnet.overlaps(u) for u in used):
                break
        else:
            raise NodeError(f"no free /24 in {POD_SUBNETS}")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{next(subnet.hosts())}/{subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        return subnet

    def _write_cni(self, subnet: ipaddress.IPv4Network, gateway: str) -> None:
        conf = {
            "cniVersion": "0.4.0", "name": "remedy", "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": str(subnet),
                                                             "gateway": gateway}]],
                          "dataDir": str(self.dir / "cni" / "ipam")}},
                {"type": "loopback"},
            ]}
        (self.dir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (self.dir / "cni" / "net.d" / "10-remedy.conflist").write_text(json.dumps(conf, indent=1))

    def _client_cert(self) -> None:
        """Kubelet client certificate signed by the cluster CA: CN=system:node:<name>."""
        pki, ca = self.dir / "pki", self.cp.pki
        if (pki / "kubelet.crt").exists():
            return
        _run("openssl", "genrsa", "-out", str(pki / "kubelet.key"), "2048")
        _run("openssl", "req", "-new", "-key", str(pki / "kubelet.key"),
             "-subj", f"/O=system:nodes/CN=system:node:{self.name}", "-out", str(pki / "kubelet.csr"))
        (pki / "client.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,"
                                        "keyEncipherment\nextendedKeyUsage=clientAuth\n")
        _run("openssl", "x509", "-req", "-in", str(pki / "kubelet.csr"), "-CA", str(ca / "ca.crt"),
             "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", "3650",
             "-extfile", str(pki / "client.ext"), "-out", str(pki / "kubelet.crt"))
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "local", "cluster": {
                "server": self.cp.server, "certificate-authority": str(ca / "ca.crt")}}],
            "users": [{"name": "node", "user": {"client-certificate": str(pki / "kubelet.crt"),
                                                "client-key": str(pki / "kubelet.key")}}],
            "contexts": [{"name": "node", "context": {"cluster": "local", "user": "node"}}],
        }
        (self.dir / "kubelet.kubeconfig").write_text(json.dumps(kubeconfig))

    def _start_containerd(self, deadline: float) -> None:
        d = self.dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "config.toml").write_text(f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
[grpc]
  address = "{self.containerd_socket}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[{cri}]
  sandbox_image = "{image_name('pause')}"
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here (not even for root): lowering oom_score_adj below containerd's
  # own fails, and the sandbox's fixed -998 made runc fail every pod ("failed to update
  # /proc/self/oom_score_adj: Permission denied"). Clamp to containerd's value instead.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d / 'runc'}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.dir / 'cni' / 'net.d'}"
""")
        self.cp._spawn("containerd", ["containerd", f"--config={d / 'config.toml'}"])
        self.cp._wait("containerd", lambda: self._ctr("version", check=False).returncode == 0,
                      deadline)
        for image in IMAGES:
            self.import_image(images_dir() / f"{image}.tar")

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args,
                    check=check)

    def import_image(self, archive: Path) -> None:
        """Make an OCI archive (remedy_devenv.oci) available to pods on this node."""
        self._ctr("images", "import", str(archive))

    def _start_scheduler(self, port: int, deadline: float) -> None:
        assert self.bin_dir is not None
        kc = str(self.cp.admin_kubeconfig)
        self.cp._spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", f"--secure-port={port}", "--bind-address=127.0.0.1",
            f"--cert-dir={self.dir / 'scheduler-certs'}",
        ])
        self.cp._wait("kube-scheduler", lambda: self.cp._get(
            f"https://127.0.0.1:{port}/healthz", verify=False) == b"ok", deadline)

    def _start_kubelet(self, node_ip: str, cfg: dict[str, int], deadline: float) -> None:
        assert self.bin_dir is not None
        self._make_cgroup_root()
        # The kubelet acts as system:node:<name>; without the Node authorizer (the cluster uses
        # RBAC only) that identity needs the system:node role bound explicitly.
        self.cp.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"remedy-node-{self.name}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": f"system:node:{self.name}"}]}))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # This machine has cgroup v1; kubelet 1.35 refuses it unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root, "cgroupsPerQOS": True,
            "address": node_ip, "port": cfg["kubelet_port"],
            "healthzBindAddress": "127.0.0.1", "healthzPort": cfg["kubelet_healthz_port"],
            "readOnlyPort": 0,
            # The apiserver's requests (logs, exec) come without a client cert; the kubelet API
            # listens on the private bridge address only.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False},
                               "x509": {}},
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "failSwapOn": False, "resolvConf": "", "podLogsDir": str(self.dir / "pod-logs"),
            "serializeImagePulls": False, "registerNode": True,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "4s", "nodeStatusReportFrequency": "10s",
            "syncFrequency": "5s", "fileCheckFrequency": "5s",
            "containerLogMaxSize": "5Mi",
        }
        (self.dir / "kubelet-config.json").write_text(json.dumps(config, indent=1))
        # One kubelet start at a time on this machine (other test sessions may start nodes
        # too): otherwise a second node could read the first kubelet's values as the originals.
        with open(KUBELET_START_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sysctls = _read_sysctls()
            self.cp._spawn("kubelet", [
                str(self.bin_dir / "kubelet"), f"--config={self.dir / 'kubelet-config.json'}",
                f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}", f"--root-dir={self.dir / 'kubelet'}",
                f"--hostname-override={self.name}", f"--node-ip={node_ip}", "--v=1",
            ])
            try:
                # Ready implies the sysctls were written: the kubelet reports its runtime as
                # synced only after its container manager (which writes them) has started.
                self.cp._wait("kubelet", self._ready, deadline)
            finally:
                _restore_sysctls(sysctls)

    def _make_cgroup_root(self) -> None:
        """The kubelet requires its cgroup root to exist in every hierarchy."""
        for hierarchy in _cgroup_subsystems():
            path = hierarchy / self.cgroup_root.strip("/")
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # empty in a new cpuset cgroup
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((hierarchy / knob).read_text())

    def _ready(self) -> bool:
        out = self.cp.kubectl("get", "node", self.name, "-o",
                              "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return out.returncode == 0 and out.stdout.strip() == "True"

    # -- witnesses the operator does not control (for tests and the demo) ------------------
    def kernel_oom_kills(self, pod_uid: str) -> list[str]:
        """Container ids the kernel OOM-killed in this pod, from the kernel log lines
        `oom-kill:...,task_memcg=<cgroup root>/kubepods/.../pod<uid>/<container id>,...`."""
        log = _run("dmesg").stdout
        marker = f"{self.cgroup_root}/kubepods/"
        return re.findall(rf"task_memcg={re.escape(marker)}\S*pod{re.escape(pod_uid)}/([0-9a-f]{{64}})",
                          log)

    def memory_limit_bytes(self, cgroup: str) -> int:
        """The memory limit the kernel enforces (cgroup v1) on a running container (its id) or
        a pod (`pod<uid>`)."""
        root = CGROUP_V1 / "memory" / self.cgroup_root.strip("/")
        for path in root.rglob(cgroup):
            return int((path / "memory.limit_in_bytes").read_text())
        raise NodeError(f"no memory cgroup {cgroup} under {root}")

    def running_containers(self) -> set[str]:
        """Ids of the tasks containerd reports RUNNING (sandboxes and containers)."""
        lines = self._ctr("tasks", "ls").stdout.splitlines()[1:]
        return {f[0] for f in (line.split() for line in lines) if len(f) >= 3 and f[2] == "RUNNING"}

    # -- stop -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """After kubelet and containerd are stopped: kill pod processes, unmount, free cgroups,
        delete the bridge. Safe to call repeatedly and after a crash (uses only the state dir)."""
        sock = str(self.containerd_socket)
        # Shims outlive containerd; each container is a child of its shim. Kill the containers
        # (every process in this node's cgroup root), then the shims of this node only.
        for hierarchy in _cgroup_subsystems():
            root = hierarchy / self.cgroup_root.strip("/")
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    for pid in procs.read_text().split():
                        try:
                            os.kill(int(pid), 9)
                        except (ProcessLookupError, ValueError):
                            pass
                break
        time.sleep(0.2)  # let the shims reap their children
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
                try:
                    os.kill(int(proc.name), 9)
                except ProcessLookupError:
                    pass
        # A killed shim leaves its socket in /run/containerd/s, named as containerd 1.6 names it:
        # sha256(<containerd address>/<namespace>/<task id>).
        tasks = self.dir / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
        for task in tasks.iterdir() if tasks.is_dir() else ():
            digest = hashlib.sha256(os.path.join(sock, "k8s.io", task.name).encode()).hexdigest()
            Path("/run/containerd/s", digest).unlink(missing_ok=True)
        time.sleep(0.3)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mnt in sorted((m for m in mounts if m.startswith(str(self.dir) + "/")),
                          key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        for hierarchy in _cgroup_subsystems():
            _remove_cgroup_tree(hierarchy / self.cgroup_root.strip("/"))
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
