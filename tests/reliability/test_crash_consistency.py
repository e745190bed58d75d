"""Crash consistency: 200 Remediations with countable side effects while the operator is
SIGKILLed again and again at random moments, and restarted.

Side effects are counted outside the operator:

* httpRequest POST to the demo ``reconcile`` role (non-idempotent) goes through a recording
  proxy in this process that counts calls per Remediation (header X-Remediation) and forwards
  to the demo, whose /admin/stats ``succeeded`` count must equal the proxy's total;
* restartWorkload / scaleWorkload each target their own Deployment, so the Deployment's
  ``metadata.generation - 1`` is the number of spec changes the operator made.

A subset is annotated remedy.dev/fault-inject=true with REMEDY_FAULT_INJECT set, so those
sleep after recording intent and after acting: kills land before intent, after intent,
mid-action, and after the action but before the outcome is recorded.
"""

from __future__ import annotations

import http.server
import random
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.demoapp import DemoProcess
from tests.fixtures.operator import create_rem, make_namespace

from ._util import FINAL, all_final, cond, create_secret, list_rems, make_deployment, phase, record, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(480)]

N_HTTP, N_RESTART, N_SCALE = 130, 40, 30
N_TOTAL = N_HTTP + N_RESTART + N_SCALE  # 200
FAULT_EVERY = 5  # every 5th Remediation sleeps at the injection points
MAX_KILLS = 14
CRON_TOKEN = "rel-cron-token-7f3a"


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.calls[self.headers.get("X-Remediation", "?")] += 1
        req = urllib.request.Request(self.server.upstream + self.path, data=body, method="POST",
                                     headers={"Authorization": self.headers.get("Authorization", ""),
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_sigkill_storm_never_double_runs_and_loses_nothing(kube_admin: client.ApiClient, operator_factory: Any) -> None:
    rng = random.Random(int(time.time()))
    demo = DemoProcess("reconcile", args=["--token", CRON_TOKEN])
    demo.start()
    proxy = _Recorder(demo.url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    ns = make_namespace(kube_admin, "rc")
    op = operator_factory(env={"REMEDY_FAULT_INJECT": "after_intent:2,after_action:2", "REMEDY_HEARTBEAT_SECONDS": "1"},
                          args=["-n", ns])
    try:
        create_secret(kube_admin, ns, "cron", {"token": CRON_TOKEN})
        for i in range(N_RESTART):
            make_deployment(kube_admin, ns, f"rs-{i:03d}")
        for i in range(N_SCALE):
            make_deployment(kube_admin, ns, f"sc-{i:03d}")
        specs: list[tuple[str, dict[str, Any]]] = []
        for i in range(N_HTTP):
            name = f"http-{i:03d}"
            specs.append((name, {"action": {"httpRequest": {
                "url": f"http://127.0.0.1:{proxy.server_address[1]}/api/cron/reconcile", "method": "POST",
                "headers": {"X-Remediation": name}, "bearerTokenSecretRef": {"name": "cron", "key": "token"}}}}))
        for i in range(N_RESTART):
            specs.append((f"restart-{i:03d}", {"action": {"restartWorkload": {"target": {"name": f"rs-{i:03d}"}}}}))
        for i in range(N_SCALE):
            specs.append((f"scale-{i:03d}", {"action": {"scaleWorkload": {"target": {"name": f"sc-{i:03d}"}, "replicas": 1}}}))
        rng.shuffle(specs)
        faulty = {name for k, (name, _) in enumerate(specs) if k % FAULT_EVERY == 0}

        op.start()

        def create(item: tuple[str, dict[str, Any]]) -> None:
            name, spec = item
            create_rem(kube_admin, ns, name, spec,
                       annotations={"remedy.dev/fault-inject": "true"} if name in faulty else None)

        kills = 0
        kill_phases: Counter[str] = Counter()

        def kill_at_random_point() -> None:
            nonlocal kills
            # Random delay after the operator is up, so the kill lands while it works:
            # before intent (objects not yet picked up), after intent, mid-action, after action.
            op.wait_ready(60)
            time.sleep(rng.uniform(0.3, 3.0))
            snapshot = Counter(phase(o) or "new" for o in list_rems(kube_admin, ns))
            op.kill()
            kills += 1
            kill_phases.update({p: n for p, n in snapshot.items() if p not in FINAL})
            op.start()

        started = time.monotonic()
        waves = [specs[i:i + 50] for i in range(0, len(specs), 50)]
        with ThreadPoolExecutor(8) as pool:
            for wave in waves:  # creations interleaved with kills
                list(pool.map(create, wave))
                kill_at_random_point()
        while kills < MAX_KILLS and not all_final(kube_admin, ns, N_TOTAL):
            kill_at_random_point()
        assert op.alive
        items = wait_for(lambda: all_final(kube_admin, ns, N_TOTAL), 240, f"all {N_TOTAL} Remediations final")
        elapsed = time.monotonic() - started
        time.sleep(2)  # anything still in flight would show up now

        by_name = {o["metadata"]["name"]: o for o in items}
        assert len(by_name) == N_TOTAL
        apps = client.AppsV1Api(kube_admin)
        effects: dict[str, int] = {}
        for name in by_name:
            if name.startswith("http-"):
                effects[name] = proxy.calls.get(name, 0)
            else:
                dep = ("rs-" if name.startswith("restart-") else "sc-") + name.split("-")[1]
                effects[name] = int(apps.read_namespaced_deployment(dep, ns).metadata.generation) - 1
        duplicates = {n: c for n, c in effects.items() if c > 1}
        with urllib.request.urlopen(f"{demo.url}/admin/stats", timeout=5) as r:
            import json

            stats = json.load(r)
        demo_calls = int(stats.get("succeeded", {}).get("POST /api/cron/reconcile", 0))
        phases = Counter(phase(o) for o in items)
        reasons = Counter(cond(o, "Completed").get("reason") for o in items)
        events = client.CoreV1Api(kube_admin).list_namespaced_event(ns).items
        resumed = {e.involved_object.name for e in events if e.reason == "Resumed"}
        figures = {
            "remediations": N_TOTAL, "httpRequest": N_HTTP, "restartWorkload": N_RESTART, "scaleWorkload": N_SCALE,
            "faultInjected": len(faulty), "kills": kills, "operatorStarts": op.starts,
            "inFlightAtKills": dict(kill_phases), "phases": dict(phases), "reasons": dict(reasons),
            "outcomeUnknown": reasons.get("OutcomeUnknown", 0), "resumed": len(resumed),
            "sideEffectsTotal": sum(effects.values()), "demoReconcileCalls": demo_calls,
            "duplicates": len(duplicates), "lost": N_TOTAL - sum(1 for o in items if phase(o) in FINAL),
            "seconds": round(elapsed, 1),
        }
        record("crash-consistency", figures)
        assert not duplicates, f"side effect applied more than once: {duplicates}"
        assert demo_calls == sum(proxy.calls.values()), (demo_calls, sum(proxy.calls.values()))
        # Every Succeeded Remediation applied its effect exactly once; OutcomeUnknown ones at most once.
        for name, obj in by_name.items():
            if phase(obj) == "Succeeded":
                assert effects[name] == 1 or name.startswith("scale-") and effects[name] <= 1, (name, effects[name], obj["status"])
            if phase(obj) == "Failed":
                assert cond(obj, "Completed").get("reason") in ("OutcomeUnknown",), (name, obj["status"])
        assert kills >= 10
        assert op.alive
    finally:
        op.stop()
        proxy.shutdown()
        demo.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
