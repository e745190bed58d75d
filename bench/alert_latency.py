#!/usr/bin/env python3
"""Benchmark: alert-driven remediation (issue 5).

Two figures, each next to a baseline measured in the same run on the same control plane:

1. Alert-to-action latency. N distinct alerts (distinct fingerprints), one per webhook request,
   sent open-loop at a fixed rate to the operator's Alertmanager webhook; a RemediationPolicy with
   the `notify` action (no external dependency) and permissive guards turns each into a child
   Remediation. Latency = child ``status.heartbeatAt`` (written with the intent record, i.e. the
   moment the action starts, millisecond precision; ``startedAt`` has 1 s resolution) minus the
   wall-clock time the webhook request was sent.
   Baseline: the bare API path the operator must take anyway, done by a minimal aiohttp client:
   create a Remediation -> its watch event arrives -> status patch (latency = moment the patch
   is issued minus the moment the create was sent), same count, same rate, other namespace.
2. Webhook throughput under a storm: S alerts over 100 fingerprints, 50 alerts per request,
   20 requests in flight; alerts/s. Baseline: an aiohttp no-op endpoint (own process) that
   reads the same payloads and answers 200.

Prints a JSON summary and writes it to bench/results/alert_latency-<date>.json
(alert_latency-quick-<date>.json with --quick; or --out).

    .venv/bin/python bench/alert_latency.py                 # full: 1,000 alerts, 10,000 storm
    .venv/bin/python bench/alert_latency.py --quick         # smoke: 100 alerts, 1,000 storm
    .venv/bin/python bench/alert_latency.py --profile       # + where the time goes (Events, py-spy)
    .venv/bin/python bench/alert_latency.py --kubeconfig ~/.cache/remedy/run/cluster/admin.kubeconfig

Bounded: every wait has a timeout and the whole run is killed by --max-seconds (default 900).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from remedy.base.constants import GROUP, VERSION  # noqa: E402 - after the path setup above
from remedy_devenv import testkit  # noqa: E402
from remedy_devenv.testkit import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"
STORM_FINGERPRINTS = 100
STORM_BATCH = 50
WARMUP = 10


class BenchError(RuntimeError):
    pass


# --- small helpers ------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    xs = sorted(values)

    def pct(p: float) -> float:  # nearest-rank
        return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]

    return {"n": len(xs), "p50": round(pct(50), 4), "p90": round(pct(90), 4), "p99": round(pct(99), 4),
            "max": round(xs[-1], 4), "mean": round(statistics.fmean(xs), 4)}


def ratio(a: float, b: float) -> float:
    if not b or math.isnan(a) or math.isnan(b):
        return math.nan
    r = a / b
    return float(f"{r:.4g}")


def by_decile(series: list[float]) -> list[float]:
    """Median latency of each tenth of the run, in send order: shows queueing build-up."""
    if len(series) < 10:
        return []
    k = len(series) / 10
    return [round(statistics.median(series[int(i * k):int((i + 1) * k)]), 4) for i in range(10)]


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def http_ok(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except (OSError, ValueError):
        return None


def wait_for(fn: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    return testkit.wait_for(fn, timeout, what, interval, error=BenchError)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- API access: raw aiohttp against the apiserver (hot paths) ------------------------------


class Api:
    """Minimal async apiserver client from a kubeconfig (token or client cert)."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
        self.host = cfg.host.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
        if cfg.cert_file:
            self.ssl.load_cert_chain(cfg.cert_file, cfg.key_file)
        self.headers = {"Content-Type": "application/json"}
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if auth:
            self.headers["Authorization"] = auth if auth.startswith("Bearer ") else f"Bearer {auth}"
        self.session: Any = None

    async def __aenter__(self) -> Api:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl, limit=100),
                                             headers=self.headers)
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.session.close()

    def path(self, ns: str, plural: str, name: str = "", sub: str = "") -> str:
        p = f"{self.host}/apis/{GROUP}/{VERSION}/namespaces/{ns}/{plural}"
        return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def request(self, method: str, url: str, body: Any = None, content_type: str | None = None,
                      params: dict[str, str] | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else None
        async with self.session.request(method, url, data=json.dumps(body) if body is not None else None,
                                        headers=headers, params=params) as r:
            data = await r.read()
            if r.status >= 300:
                raise BenchError(f"{method} {url} -> {r.status}: {data[:300]!r}")
            return json.loads(data) if data else None

    async def list_all(self, ns: str, plural: str, selector: str = "") -> dict[str, Any]:
        params = {"labelSelector": selector} if selector else None
        out: dict[str, Any] = await self.request("GET", self.path(ns, plural), params=params)
        return out


# --- setup: control plane, CRDs, namespaces, operator, policies -----------------------------


class Env:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="remedy-bench-"))
        self.cp: Any = None
        self.started_cp = False
        self.op: Any = None
        self.noop: subprocess.Popen[bytes] | None = None
        self.namespaces: list[str] = []
        self.kubeconfig: Path | None = None
        self.kube: Any = None

    def up(self) -> None:
        from kubernetes import client, config

        from remedy_devenv.cluster import ClusterError, ControlPlane, locate_binaries

        if self.args.kubeconfig:
            self.kubeconfig = Path(self.args.kubeconfig).expanduser().resolve()
            self.cp = ControlPlane(state_dir=self.tmp / "unused", bin_dir=locate_binaries())
            log(f"reusing the cluster of {self.kubeconfig}")
        else:
            last: Exception | None = None
            for _ in range(3):  # a port may be taken between choosing and binding
                ports = [free_port() for _ in range(4)]
                self.cp = ControlPlane(state_dir=self.tmp / "cluster", etcd_port=ports[0], etcd_peer_port=ports[1],
                                       apiserver_port=ports[2], controller_manager_port=ports[3], fake_kubelet=False)
                try:
                    self.cp.start(timeout=180)
                    break
                except ClusterError as exc:
                    last = exc
            else:
                raise BenchError(f"control plane did not start: {last}")
            self.started_cp = True
            self.kubeconfig = self.cp.admin_kubeconfig
            log(f"control plane ready in {self.cp.ready_seconds:.1f}s at {self.cp.server}")
        self.cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"), kubeconfig=self.kubeconfig)
        wait_for(lambda: self.cp.kubectl("wait", "--for=condition=Established", "--timeout=10s",
                                         "crd/remediations.remedy.dev", "crd/remediationpolicies.remedy.dev",
                                         check=False, kubeconfig=self.kubeconfig).returncode == 0,
                 60, "CRDs established", interval=0.5)
        # Requester identity stamped by the API server: the operator runs nothing without it.
        from remedy_devenv import admission

        self.cp.kubectl("apply", "-k", str(admission.ADMISSION), kubeconfig=self.kubeconfig)
        if self.kubeconfig == self.cp.admin_kubeconfig:
            admission.install(self.cp)
        self.kube = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(self.kube)
        suffix = uuid.uuid4().hex[:6]
        for ns in (f"bench-{suffix}", f"bench-base-{suffix}"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            self.namespaces.append(ns)

    @property
    def ns(self) -> str:
        return self.namespaces[0]

    @property
    def base_ns(self) -> str:
        return self.namespaces[1]

    def start_operator(self) -> tuple[str, str]:
        from remedy_devenv.operator import OperatorProcess

        token = secrets.token_hex(16)
        token_file = self.tmp / "webhook-token"
        token_file.write_text(token)
        port = free_port()
        assert self.kubeconfig is not None
        env = {"REMEDY_WEBHOOK_PORT": str(port), "REMEDY_WEBHOOK_TOKEN_FILE": str(token_file),
               "REMEDY_METRICS_PORT": "0",
               # heartbeatAt is the latency probe: keep the intent record's value (no refresh
               # while a notify runs, which takes milliseconds anyway).
               "REMEDY_HEARTBEAT_SECONDS": "60"}
        self.op = OperatorProcess(self.kubeconfig, self.tmp / "operator.log", env=env, args=["-n", self.ns]).start()
        self.op.wait_ready(timeout=90)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "operator webhook up")
        return f"http://127.0.0.1:{port}/alertmanager", token

    def create_policies(self, webhook: str) -> None:
        from kubernetes import client

        api = client.CustomObjectsApi(self.kube)
        guards = {"cooldown": "0s", "maxPerHour": 10_000, "maxConcurrent": 1000, "pauseAfterFailures": 1000}
        for name, alertname in (("bench-latency", "BenchLatency"), ("bench-storm", "BenchStorm")):
            api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "remediationpolicies", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name},
                "spec": {"trigger": {"alert": {"alertname": alertname}},
                         "template": {"action": {"notify": {"message": "bench {{ labels.instance }}", "severity": "info"}}},
                         "guards": guards}})
        health = webhook.rsplit("/", 1)[0] + "/healthz"
        wait_for(lambda: (h := http_ok(health)) and h.get("policies") == 2, 60, "both policies indexed by the webhook")

    def start_noop(self) -> str:
        port = free_port()
        self.noop = subprocess.Popen([sys.executable, __file__, "--serve-noop", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "no-op endpoint up")
        return f"http://127.0.0.1:{port}/alertmanager"

    def down(self) -> None:
        if self.noop is not None and self.noop.poll() is None:
            self.noop.terminate()
            try:
                self.noop.wait(5)
            except subprocess.TimeoutExpired:
                self.noop.kill()
        if self.op is not None:
            self.op.stop()
        if self.kube is not None and not self.started_cp:
            from kubernetes import client

            for ns in self.namespaces:
                try:
                    client.CoreV1Api(self.kube).delete_namespace(ns)
                except Exception:  # noqa: BLE001 - best effort on a reused cluster
                    pass
        if self.started_cp:
            self.cp.stop()
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def operator_log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.tmp / "operator.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no operator log)"


# --- payloads ---------------------------------------------------------------------------------


def alert(fp: str, alertname: str, starts: str, instance: str) -> dict[str, Any]:
    body: dict[str, Any] = testkit.alert(fp, starts=starts, alertname=alertname, annotations={"summary": "bench"},
                                         instance=instance, severity="page")
    return body


payload = testkit.alert_payload


async def paced(n: int, rate: float, send: Any) -> list[Any]:
    """Open loop: request i starts at t0 + i/rate whatever earlier requests are doing."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    return await asyncio.gather(*tasks)


# --- phase 1: alert-to-action latency (remedy) ----------------------------------------------


async def remediation_requests(api: Api) -> dict[str, float]:
    """The API server's own count of requests on remediations (``apiserver_request_total``), by
    verb, subresource and code: the witness for how many calls each child costs, whatever the load."""
    async with api.session.get(f"{api.host}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="remediations"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            key = " ".join(x for x in (labels.get("verb"), labels.get("subresource"), labels.get("code")) if x)
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def remedy_latency(env: Env, api: Api, webhook: str, token: str, n: int, rate: float,
                         timeout: float) -> dict[str, Any]:
    import aiohttp

    starts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sent: dict[str, float] = {}
    rtts: list[float] = []
    outcomes: dict[str, int] = {}

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async def send_one(fp: str, i: int) -> None:
            body = json.dumps(payload([alert(fp, "BenchLatency", starts, f"i-{i}")]))
            t = time.time()
            async with session.post(webhook, data=body, headers={"Content-Type": "application/json"}) as r:
                data = await r.json()
            rtts.append(time.time() - t)
            if r.status != 200:
                raise BenchError(f"webhook answered {r.status}: {data}")
            sent[fp] = t
            for k, v in data.get("outcomes", {}).items():
                outcomes[k] = outcomes.get(k, 0) + v

        # Warm-up (not measured): kopf's watch, the operator's client pool, the apiserver caches.
        await paced(WARMUP, rate, lambda i: send_one(f"warm{i:04d}", i))
        await asyncio.sleep(2)
        sent.clear()
        rtts.clear()
        outcomes.clear()
        requests_before = await remediation_requests(api)
        t_begin = time.monotonic()
        profiler = start_profile(env, n / rate + 2) if env.args.profile else None
        await paced(n, rate, lambda i: send_one(f"lat{i:05d}", i))
        send_seconds = time.monotonic() - t_begin
        profile = finish_profile(profiler) if profiler is not None else None

    # Collect: each child's heartbeatAt (intent record = action start), matched by fingerprint.
    deadline = time.monotonic() + timeout
    latencies: dict[str, float] = {}
    phases: dict[str, int] = {}
    while True:
        items = (await api.list_all(env.ns, "remediations", "remedy.dev/policy=bench-latency"))["items"]
        latencies.clear()
        phases.clear()
        for c in items:
            fp = (c["metadata"].get("annotations") or {}).get("remedy.dev/fingerprint", "")
            if fp not in sent:
                continue  # warm-up
            st = c.get("status") or {}
            phases[st.get("phase", "None")] = phases.get(st.get("phase", "None"), 0) + 1
            if st.get("heartbeatAt"):
                latencies[fp] = parse_ts(st["heartbeatAt"]) - sent[fp]
        done = len(latencies) == len(sent) and all(p in ("Succeeded", "Failed", "Skipped") for p in phases)
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    requests_after = await remediation_requests(api)
    # Per measured child, the operator's calls (the bench's own are LIST and WATCH, left out).
    per_child = {k: round((v - requests_before.get(k, 0.0)) / max(1, len(sent)), 2)
                 for k, v in sorted(requests_after.items())
                 if not k.startswith(("LIST", "WATCH")) and v > requests_before.get(k, 0.0)}
    order = sorted(latencies, key=lambda fp: sent[fp])
    breakdown = await latency_breakdown(api, env.ns, items, sent)
    return {"sent": len(sent), "send_seconds": round(send_seconds, 2), "outcomes": outcomes,
            "started": len(latencies), "phases": phases, "latency_s": percentiles(list(latencies.values())),
            "p50_by_decile_s": by_decile([latencies[fp] for fp in order]),
            "webhook_rtt_s": percentiles(rtts), "breakdown": breakdown, "profile": profile,
            "api_requests_per_child": per_child}


async def latency_breakdown(api: Api, ns: str, items: list[dict[str, Any]], sent: dict[str, float]) -> dict[str, Any]:
    """Where the alert-to-action time goes, per child, from the operator's own Events
    (events.k8s.io/v1, microsecond eventTime): ``Accepted`` is posted when the lifecycle accepts
    the object, ``heartbeatAt`` is stamped by the intent write. A first pass starts from the
    watch event's body and writes Pending with the intent, so sent -> Accepted = webhook, guards,
    create, watch delivery, kopf dispatch (an operator before issue 23 also did a GET and a
    Pending PATCH first); Accepted -> intent = approval gate, SubjectAccessReview of the
    requester, plan and the intent PATCH. ``api_requests_per_child`` counts the calls."""
    events = await api.request("GET", f"{api.host}/apis/events.k8s.io/v1/namespaces/{ns}/events")
    accepted: dict[str, float] = {}
    for e in events.get("items", []):
        if e.get("reason") == "Accepted" and e.get("eventTime"):
            accepted[(e.get("regarding") or {}).get("name", "")] = parse_ts(e["eventTime"])
    to_accepted: list[float] = []
    to_intent: list[float] = []
    for c in items:
        fp = (c["metadata"].get("annotations") or {}).get("remedy.dev/fingerprint", "")
        name, beat = c["metadata"]["name"], (c.get("status") or {}).get("heartbeatAt")
        if fp in sent and name in accepted and beat:
            to_accepted.append(accepted[name] - sent[fp])
            to_intent.append(parse_ts(beat) - accepted[name])
    return {"children": len(to_accepted), "sent_to_accepted_s": percentiles(to_accepted),
            "accepted_to_intent_s": percentiles(to_intent)}


def start_profile(env: Env, seconds: float) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy (sampling, 250 Hz, all threads, CPU only) on the operator during the measured sends."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if env.op is None or env.op.proc is None or not Path(spy).exists():
        log("profile: py-spy not found (pip install py-spy); no profile")
        return None
    out = env.tmp / "profile.txt"
    proc = subprocess.Popen([spy, "record", "--pid", str(env.op.proc.pid), "--rate", "250", "--format", "raw",
                             "--duration", str(int(seconds) + 1), "--output", str(out), "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def finish_profile(profiler: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any] | None:
    """Collapsed stacks -> where the operator's busy CPU samples go.

    A sample whose innermost frame is a wait (an idle pool thread on its queue, the event loop
    in select, a socket read or poll) is idle time, not work: py-spy still reports some of
    those, so they are counted apart. Each busy sample is charged to one code area: the
    innermost frame on its stack that belongs to a known area (so the shares add up to 1)."""
    proc, out = profiler
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    if not out.exists():
        return None
    idle_leaves = ("_worker (concurrent/futures/thread.py", "select (selectors.py", "SSLSocket.read (ssl.py",
                   "do_poll (urllib3/util/wait.py", "wait (threading.py", "SSLObject.read (ssl.py")
    areas = (("kubernetes client (models, REST, urllib3)", ("kubernetes/", "urllib3/")),
             ("pydantic (validation, serialisation)", ("pydantic",)),
             ("json", ("json/",)), ("ssl (TLS to the API server)", ("ssl.py",)),
             ("logging", ("logging/",)), ("aiohttp (webhook server, kopf's watch)", ("aiohttp/",)),
             ("kopf (watch, dispatch, bookkeeping)", ("kopf/",)),
             ("remedy webhook and guards", ("remedy/triggers/", "remedy/policies/")),
             ("remedy engine and actions", ("remedy/",)),
             ("asyncio and threads", ("asyncio/", "concurrent/", "threading.py")))
    total = idle = 0
    by_area: dict[str, int] = {}
    self_frames: dict[str, int] = {}
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        if any(frames[-1].startswith(m) or m in frames[-1] for m in idle_leaves):
            idle += n
            continue
        area = next((name for f in reversed(frames) for name, marks in areas if any(m in f for m in marks)), "other")
        by_area[area] = by_area.get(area, 0) + n
        self_frames[frames[-1]] = self_frames.get(frames[-1], 0) + n
    busy = total - idle
    if not busy:
        return None
    top = sorted(self_frames.items(), key=lambda kv: -kv[1])[:12]
    return {"samples": total, "busy_samples": busy, "rate_hz": 250,
            "share_by_area": {a: round(n / busy, 3) for a, n in sorted(by_area.items(), key=lambda kv: -kv[1])},
            "top_self_frames": [[f[:120], round(n / busy, 3)] for f, n in top]}


# --- phase 1 baseline: create -> watch event -> status patch -------------------------------


async def baseline_latency(env: Env, api: Api, n: int, rate: float, timeout: float) -> dict[str, Any]:
    ns = env.base_ns
    sent: dict[str, float] = {}
    acted: dict[str, float] = {}
    patched: set[str] = set()
    patch_tasks: set[asyncio.Task[None]] = set()
    rv = (await api.list_all(ns, "remediations"))["metadata"]["resourceVersion"]

    async def patch(name: str, ts: float) -> None:
        await api.request("PATCH", api.path(ns, "remediations", name, "status"),
                          {"status": {"phase": "Running", "heartbeatAt": iso_ms(ts), "startedAt": iso_ms(ts)[:19] + "Z"}},
                          content_type="application/merge-patch+json")
        patched.add(name)

    async def watch() -> None:
        """The 'controller': on ADDED, act at once (stamp the time, patch status)."""
        nonlocal rv
        while True:
            params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}
            async with api.session.get(api.path(ns, "remediations"), params=params, timeout=None) as r:
                async for line in r.content:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") == "ADDED":
                        name = obj["metadata"]["name"]
                        ts = time.time()
                        acted[name] = ts
                        t = asyncio.create_task(patch(name, ts))
                        patch_tasks.add(t)
                        t.add_done_callback(patch_tasks.discard)

    def body(name: str, i: int) -> dict[str, Any]:  # shaped like a policy's child
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
                "metadata": {"name": name, "labels": {"remedy.dev/policy": "baseline", "remedy.dev/escalation-step": "0"},
                             "annotations": {"remedy.dev/fingerprint": name, "remedy.dev/target": "notify:Notify/info"}},
                "spec": {"action": {"notify": {"message": f"bench i-{i}", "severity": "info"}},
                         "dryRun": False, "timeout": "5m", "reason": "baseline"}}

    async def create(name: str, i: int) -> None:
        t = time.time()
        await api.request("POST", api.path(ns, "remediations"), body(name, i))
        sent[name] = t

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.5)
        await paced(WARMUP, rate, lambda i: create(f"warm-{i:04d}", i))
        await asyncio.sleep(2)
        sent.clear()
        await paced(n, rate, lambda i: create(f"base-{i:05d}", i))
        deadline = time.monotonic() + timeout
        while (not all(k in patched for k in sent)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, *patch_tasks, return_exceptions=True)
    order = sorted((k for k in sent if k in acted), key=lambda k: sent[k])
    lat = [acted[k] - sent[k] for k in order]
    return {"sent": len(sent), "acted": len(lat), "patched": sum(1 for k in sent if k in patched),
            "latency_s": percentiles(lat), "p50_by_decile_s": by_decile(lat)}


# --- phase 2: storm throughput ---------------------------------------------------------------


async def storm(url: str, token: str, total: int, concurrency: int, tag: str) -> dict[str, Any]:
    import aiohttp

    starts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    alerts = [alert(f"{tag}{i % STORM_FINGERPRINTS:03d}", "BenchStorm", starts, f"i-{i % STORM_FINGERPRINTS}")
              for i in range(total)]
    bodies = [json.dumps(payload(alerts[i:i + STORM_BATCH])).encode() for i in range(0, total, STORM_BATCH)]
    codes: dict[int, int] = {}
    outcomes: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        answer_s: list[float] = []

        async def send(b: bytes) -> None:
            async with sem:
                sent = time.monotonic()
                async with session.post(url, data=b) as r:
                    data = await r.read()
                    answer_s.append(time.monotonic() - sent)
                    codes[r.status] = codes.get(r.status, 0) + 1
                    try:
                        for k, v in (json.loads(data).get("outcomes") or {}).items():
                            outcomes[k] = outcomes.get(k, 0) + v
                    except (ValueError, AttributeError):
                        pass

        async with session.get(url.rsplit("/", 1)[0] + "/healthz") as r:  # connection warm-up
            await r.read()
        t = time.monotonic()
        await asyncio.gather(*(send(b) for b in bodies))
        elapsed = time.monotonic() - t
    return {"alerts": total, "requests": len(bodies), "elapsed_s": round(elapsed, 3),
            "alerts_per_s": round(total / elapsed, 1), "codes": {str(k): v for k, v in codes.items()},
            "outcomes": outcomes, "answer_s": percentiles(answer_s) if answer_s else {}}


async def settled_children(api: Api, ns: str, selector: str, expected: int, timeout: float) -> tuple[int, float]:
    """LIST on the API server until ``expected`` children exist (work queued by the webhook
    finishes after its answer), then once more after a pause, so a late duplicate would show."""
    t = time.monotonic()
    count = 0
    while time.monotonic() - t < timeout:
        count = len((await api.list_all(ns, "remediations", selector))["items"])
        if count >= expected:
            break
        await asyncio.sleep(0.1)
    settle = time.monotonic() - t
    await asyncio.sleep(2.0)
    return len((await api.list_all(ns, "remediations", selector))["items"]), round(settle, 3)


def serve_noop(port: int) -> None:
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/alertmanager", receive)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- main -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gb"] = round(int(mem) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


async def run(env: Env, args: argparse.Namespace, summary: dict[str, Any]) -> None:
    webhook, token = env.start_operator()
    env.create_policies(webhook)
    noop = env.start_noop()
    assert env.kubeconfig is not None
    async with Api(env.kubeconfig) as api:
        log(f"baseline: {args.alerts} x create -> watch -> status patch at {args.rate}/s")
        base = await baseline_latency(env, api, args.alerts, args.rate, args.phase_timeout)
        log(f"baseline p50 {base['latency_s']['p50']}s p99 {base['latency_s']['p99']}s")
        log(f"remedy: {args.alerts} alerts at {args.rate}/s")
        rem = await remedy_latency(env, api, webhook, token, args.alerts, args.rate, args.phase_timeout)
        log(f"remedy p50 {rem['latency_s']['p50']}s p99 {rem['latency_s']['p99']}s ({rem['started']}/{rem['sent']} started)")
        log(f"storm: {args.storm} alerts over {STORM_FINGERPRINTS} fingerprints, concurrency {args.concurrency}")
        st_noop = await storm(noop, token, args.storm, args.concurrency, "noop")
        st_rem = await storm(webhook, token, args.storm, args.concurrency, "storm")
        storm_children, settle_s = await settled_children(api, env.ns, "remedy.dev/policy=bench-storm",
                                                          STORM_FINGERPRINTS, args.phase_timeout)
        log(f"storm: remedy {st_rem['alerts_per_s']} alerts/s, no-op {st_noop['alerts_per_s']} alerts/s, "
            f"{storm_children} children")
    summary.update({
        "latency": {
            "remedy": rem["latency_s"], "baseline": base["latency_s"],
            "ratio": {k: ratio(float(rem["latency_s"][k]), float(base["latency_s"][k])) for k in ("p50", "p90", "p99", "max")},
            "remedy_webhook_rtt": rem["webhook_rtt_s"],
            "remedy_p50_by_decile": rem["p50_by_decile_s"], "baseline_p50_by_decile": base["p50_by_decile_s"],
            "remedy_detail": {k: rem[k] for k in ("sent", "send_seconds", "outcomes", "started", "phases")},
            "remedy_breakdown": rem["breakdown"], "remedy_profile": rem["profile"],
            "remedy_api_requests_per_child": rem["api_requests_per_child"],
            "baseline_detail": {k: base[k] for k in ("sent", "acted", "patched")},
        },
        "storm": {"remedy": st_rem, "noop": st_noop, "ratio": ratio(st_rem["alerts_per_s"], st_noop["alerts_per_s"]),
                  "children_created": storm_children, "children_settled_after_s": settle_s,
                  "children_per_s": round(storm_children / (st_rem["elapsed_s"] + settle_s), 1)},
    })
    summary["checks"] = {
        # An answer after the webhook's budget says queued; all_children_started proves those too.
        "all_alerts_created": rem["outcomes"].get("created", 0) + rem["outcomes"].get("queued", 0) == args.alerts,
        "all_children_started": rem["started"] == args.alerts,
        "all_children_succeeded": rem["phases"].get("Succeeded", 0) == args.alerts,
        "baseline_all_patched": base["patched"] == args.alerts,
        "storm_all_200": st_rem["codes"] == {"200": st_rem["requests"]},
        "storm_exactly_one_child_per_fingerprint": storm_children == STORM_FINGERPRINTS,
        "storm_every_alert_accounted": sum(st_rem["outcomes"].values()) == args.storm
        and not any(k.startswith("error") for k in st_rem["outcomes"]),
    }
    # Speed is a goal the recorded run reports, not a check that fails the run: the smoke test
    # runs this beside other test sessions on the same cores, where answer times say nothing.
    summary["goals"] = {"storm_every_answer_within_1s": float(st_rem["answer_s"].get("max", 99)) < 1.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--alerts", type=int, default=1000, help="distinct alerts for the latency phase (default 1000)")
    p.add_argument("--storm", type=int, default=10_000, help="alerts in the storm, over 100 fingerprints (default 10000)")
    p.add_argument("--quick", action="store_true", help="smoke: 100 alerts, 1,000 storm alerts")
    p.add_argument("--rate", type=float, default=5.0, help="latency phase: alerts (and baseline creates) per second")
    p.add_argument("--concurrency", type=int, default=20, help="storm: requests in flight")
    p.add_argument("--kubeconfig", help="reuse this cluster (e.g. scripts/cluster up) instead of starting one")
    p.add_argument("--out", help="write the JSON here (default bench/results/alert_latency[-quick]-<date>.json)")
    p.add_argument("--phase-timeout", type=float, default=180.0, help="max wait for stragglers per phase (s)")
    p.add_argument("--max-seconds", type=int, default=900, help="hard limit for the whole run")
    p.add_argument("--profile", action="store_true",
                   help="py-spy CPU profile of the operator during the latency phase (needs py-spy and ptrace)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (operator log, cluster logs)")
    p.add_argument("--serve-noop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_noop:
        serve_noop(args.serve_noop)
        return 0
    if args.quick:
        args.alerts, args.storm = 100, 1000
    if args.storm % STORM_BATCH or args.storm < STORM_FINGERPRINTS:
        p.error(f"--storm must be a multiple of {STORM_BATCH} and at least {STORM_FINGERPRINTS}")

    def on_alarm(*_: Any) -> None:
        raise BenchError(f"--max-seconds {args.max_seconds} exceeded")

    def on_term(*_: Any) -> None:
        raise BenchError("terminated (SIGTERM)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(args.max_seconds)

    began = time.monotonic()
    summary: dict[str, Any] = {
        "benchmark": "alert_latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "bench/alert_latency.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "params": {"alerts": args.alerts, "rate_per_s": args.rate, "storm_alerts": args.storm,
                   "storm_fingerprints": STORM_FINGERPRINTS, "storm_batch": STORM_BATCH,
                   "storm_concurrency": args.concurrency, "warmup": WARMUP, "quick": args.quick},
        "method": {
            "remedy_latency": "child status.heartbeatAt (intent record, ms) - time the webhook request was sent",
            "baseline_latency": "time the status patch is issued on the watch ADDED event - time the create was sent",
            "storm_baseline": "aiohttp no-op endpoint (own process) reading the same payloads",
        },
    }
    env = Env(args)
    rc = 0
    try:
        env.up()
        asyncio.run(run(env, args, summary))
        if not all(summary["checks"].values()):
            rc = 1
            log(f"checks failed: {summary['checks']}")
    except BaseException as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        rc = 1
        summary["error"] = f"{type(exc).__name__}: {exc}"
        log(summary["error"])
        log("operator log tail:\n" + env.operator_log_tail())
    finally:
        signal.alarm(0)
        try:
            env.down()
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup: {exc}")
    summary["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary["wall_seconds"] = round(time.monotonic() - began, 1)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else RESULTS / f"alert_latency{'-quick' if args.quick else ''}-{day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    log(f"wrote {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
