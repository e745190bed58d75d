"""Crash consistency: Remediations with countable side effects while the operator is SIGKILLed
again and again at random moments, and restarted.

Mix (each workload Remediation has its own Deployment): restartWorkload, scaleWorkload
{delta: 1}, rollbackWorkload without toRevision (revision 2 -> 1), raiseMemoryOnOOM (factor
1.5 on 256Mi), and non-idempotent httpRequest POSTs to the demo ``reconcile`` role.

Side effects are counted by witnesses the operator does not control:

* workloads: the kube-apiserver audit log (remedy_devenv.audit), effective (2xx) writes by the
  operator's user per target Deployment (spec and /scale). A repeated restart or scale is a
  second PATCH even when it changes nothing, so it is visible here (generation is not);
* HTTP: the demo service's own count of reconcile runs per caller (X-Remediation header).

Figures (bench/results/reliability-crash-consistency[-ci].json), none of them literal:
``duplicates_audit`` / ``duplicates_http`` (Remediations with more than one effective side
effect; for workloads a 2xx write), ``possible_duplicates_audit`` (2xx plus 5xx writes > 1: the
apiserver logs 504 for a write whose client was SIGKILLed mid-request, although it may have
committed), ``lost`` (created minus final after a bounded wait), ``never_executed`` (final, not
Skipped, and no write or call reached the target at all) apart from ``outcome_unknown``
(Completed reason OutcomeUnknown), ``wrong_end_state`` (Succeeded but the target is not in the
planned state), ``beyond_plan`` (any target moved past its one planned change), and the ``seed`` that drove the mix, the order and the kill times
(REMEDY_CRASH_SEED replays one).

Size: the CI variant is bounded (a few minutes); REMEDY_CRASH_FULL=1 runs >= 200 Remediations
with >= 20 SIGKILLs (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv import kubelet
from remedy_devenv.audit import AuditCounter, read_writes
from remedy_devenv.cluster import OPERATOR_USER
from remedy_devenv.demoapp import DemoProcess
from tests.fixtures.operator import create_rem, make_namespace

from ._util import FINAL, cond, create_secret, list_rems, make_deployment, phase, record, wait_for

FULL = os.environ.get("REMEDY_CRASH_FULL") == "1"
pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(1500 if FULL else 600)]

# Remediations per kind; the full run is >= 200 with >= 20 kills (one kill per wave at least).
SIZES = ({"restart": 40, "scale": 40, "rollback": 30, "memory": 30, "http": 60} if FULL else
         {"restart": 8, "scale": 8, "rollback": 6, "memory": 6, "http": 12})
WAVE = 10 if FULL else 8
MIN_KILLS = 20 if FULL else 5
MAX_KILLS = MIN_KILLS + 10
FAULT_EVERY = 5  # every 5th Remediation sleeps after intent and after acting
FINAL_WAIT = 300.0 if FULL else 180.0  # bounded: what is not final by then counts as lost
CRON_TOKEN = "rel-cron-token-7f3a"
PREFIX = {"restart": "rs", "scale": "sc", "rollback": "rb", "memory": "mem"}
REVISION = "deployment.kubernetes.io/revision"


def _setup_workloads(api: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    for kind in ("restart", "scale", "rollback"):
        for i in range(SIZES[kind]):
            make_deployment(api, ns, f"{PREFIX[kind]}-{i:03d}")
    for i in range(SIZES["memory"]):
        make_deployment(api, ns, f"mem-{i:03d}", replicas=1, memory="256Mi")

    def rev(name: str) -> str:
        return str((apps.read_namespaced_deployment(name, ns).metadata.annotations or {}).get(REVISION))

    rollbacks = [f"rb-{i:03d}" for i in range(SIZES["rollback"])]
    wait_for(lambda: all(rev(n) == "1" for n in rollbacks), 120, "rollback targets at revision 1")
    for n in rollbacks:
        apps.patch_namespaced_deployment(n, ns, {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "example/app:2-bad"}]}}}})
    wait_for(lambda: all(rev(n) == "2" for n in rollbacks), 120, "rollback targets at revision 2")
    mems = {f"mem-{i:03d}" for i in range(SIZES["memory"])}

    def running() -> list[Any]:
        pods = [p for p in core.list_namespaced_pod(ns, label_selector="app").items
                if p.metadata.labels.get("app") in mems and p.status.phase == "Running"]
        return pods if len({p.metadata.labels["app"] for p in pods}) == len(mems) else []

    for pod in wait_for(running, 180, "memory targets running"):
        kubelet.mark_oomkilled(core, ns, pod.metadata.name)


def _specs(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, kind, spec) for every Remediation of the run."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(SIZES["restart"]):
        out.append((f"restart-{i:03d}", "restart", {"restartWorkload": {"target": {"name": f"rs-{i:03d}"}}}))
    for i in range(SIZES["scale"]):
        out.append((f"scale-{i:03d}", "scale", {"scaleWorkload": {"target": {"name": f"sc-{i:03d}"}, "delta": 1}}))
    for i in range(SIZES["rollback"]):
        out.append((f"rollback-{i:03d}", "rollback", {"rollbackWorkload": {"target": {"name": f"rb-{i:03d}"}}}))
    for i in range(SIZES["memory"]):
        out.append((f"memory-{i:03d}", "memory", {"raiseMemoryOnOOM": {
            "target": {"name": f"mem-{i:03d}"}, "factor": 1.5, "maxLimit": "2Gi"}}))
    for i in range(SIZES["http"]):
        name = f"http-{i:03d}"
        out.append((name, "http", {"httpRequest": {
            "url": f"{url}/api/cron/reconcile", "method": "POST", "headers": {"X-Remediation": name},
            "bearerTokenSecretRef": {"name": "cron", "key": "token"}}}))
    return out


def _end_state(apps: client.AppsV1Api, ns: str, kind: str, target: str) -> bool:
    """Is the target in the state its (single) planned change leads to?"""
    dep = apps.read_namespaced_deployment(target, ns)
    c = dep.spec.template.spec.containers[0]
    if kind == "restart":
        return "remedy.dev/restarted-by" in (dep.spec.template.metadata.annotations or {})
    if kind == "scale":
        return int(dep.spec.replicas or 0) == 1
    if kind == "rollback":
        return str(c.image) == "example/app:1"
    return str((c.resources.limits or {}).get("memory")) == "384Mi"


def _beyond_plan(apps: client.AppsV1Api, ns: str, kind: str, target: str) -> bool:
    """Did the target move past its one planned change (a second delta, a second raise, a
    roll-forward)? Whatever the Remediation's phase, this must never be true."""
    dep = apps.read_namespaced_deployment(target, ns)
    if kind == "scale":
        return int(dep.spec.replicas or 0) > 1
    if kind == "memory":
        return str((dep.spec.template.spec.containers[0].resources.limits or {}).get("memory")) not in ("256Mi", "384Mi")
    if kind == "rollback":
        return int((dep.metadata.annotations or {}).get(REVISION, 0)) > 3
    return False


def test_sigkill_storm_never_double_runs_and_loses_nothing(control_plane: Any, kube_admin: client.ApiClient,
                                                           operator_factory: Any) -> None:
    seed = int(os.environ.get("REMEDY_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"\n[crash-consistency] seed={seed} (replay with REMEDY_CRASH_SEED={seed})")
    demo = DemoProcess("reconcile", args=["--token", CRON_TOKEN])
    demo.start()
    ns = make_namespace(kube_admin, "rc")
    op = operator_factory(env={"REMEDY_FAULT_INJECT": "after_intent:2,after_action:2", "REMEDY_HEARTBEAT_SECONDS": "1"},
                          args=["-n", ns])
    try:
        create_secret(kube_admin, ns, "cron", {"token": CRON_TOKEN})
        _setup_workloads(kube_admin, ns)
        specs = _specs(demo.url)
        rng.shuffle(specs)
        kind_of = {name: kind for name, kind, _ in specs}
        faulty = {name for k, (name, _, _) in enumerate(specs) if k % FAULT_EVERY == 0}

        op.start()

        def create(item: tuple[str, str, dict[str, Any]]) -> None:
            name, _, action = item
            create_rem(kube_admin, ns, name, {"action": action},
                       annotations={"remedy.dev/fault-inject": "true"} if name in faulty else None)

        kills = 0
        kill_phases: Counter[str] = Counter()

        def kill_at_random_point() -> None:
            nonlocal kills
            # A random moment after the operator is up, so the kill lands while it works:
            # before intent, after intent, mid-action, after the action before the outcome.
            op.wait_ready(60)
            time.sleep(rng.uniform(0.3, 3.0))
            snapshot = Counter(phase(o) or "new" for o in list_rems(kube_admin, ns))
            op.kill()
            kills += 1
            kill_phases.update({p: n for p, n in snapshot.items() if p not in FINAL})
            op.start()

        def final_count() -> int:
            return sum(1 for o in list_rems(kube_admin, ns) if phase(o) in FINAL)

        started = time.monotonic()
        waves = [specs[i:i + WAVE] for i in range(0, len(specs), WAVE)]
        with ThreadPoolExecutor(8) as pool:
            for wave in waves:  # creations interleaved with kills
                list(pool.map(create, wave))
                kill_at_random_point()
        while kills < MAX_KILLS and (kills < MIN_KILLS or final_count() < len(specs)):
            kill_at_random_point()
        assert op.alive
        # Bounded wait, then count: "lost" is computed from what exists, not assumed zero.
        deadline = time.monotonic() + FINAL_WAIT
        while time.monotonic() < deadline and final_count() < len(specs):
            time.sleep(1)
        elapsed = time.monotonic() - started
        audit = AuditCounter(control_plane.audit_log, OPERATOR_USER, ns)
        audit.settle(quiet_seconds=2.0)

        items = {o["metadata"]["name"]: o for o in list_rems(kube_admin, ns)}
        with urllib.request.urlopen(f"{demo.url}/admin/stats", timeout=5) as r:
            stats = json.load(r)
        runs_by_caller: dict[str, int] = stats.get("runs_by_caller", {})
        writes_by_name: Counter[str] = Counter()  # 2xx: certainly applied
        ambiguous_by_name: Counter[str] = Counter()  # 5xx: the client died mid-request; may be applied
        for w in audit.writes():
            if w.effective:
                writes_by_name[w.name] += 1
            elif w.ambiguous:
                ambiguous_by_name[w.name] += 1
        # Every write to the namespace by anyone, for the diagnostics of odd cases below.
        any_writes: dict[str, list[list[Any]]] = {}
        for w in read_writes(control_plane.audit_log):
            if w.namespace == ns:
                any_writes.setdefault(w.name, []).append([w.user, w.verb, w.resource, w.code])
        apps = client.AppsV1Api(kube_admin)
        effects: dict[str, int] = {}
        reached: dict[str, int] = {}  # effective + ambiguous writes: what reached the target
        wrong_end_state: list[str] = []
        beyond_plan: list[str] = []
        for name, kind in kind_of.items():
            if kind == "http":
                effects[name] = reached[name] = int(runs_by_caller.get(name, 0))
                continue
            target = f"{PREFIX[kind]}-{name.split('-')[1]}"
            effects[name] = writes_by_name.get(target, 0)
            reached[name] = effects[name] + ambiguous_by_name.get(target, 0)
            if phase(items.get(name, {})) == "Succeeded" and not _end_state(apps, ns, kind, target):
                wrong_end_state.append(name)
            if _beyond_plan(apps, ns, kind, target):
                beyond_plan.append(name)
        dup = {n: c for n, c in effects.items() if c > 1}
        possible_dup = {n: c for n, c in reached.items() if c > 1 and kind_of[n] != "http"}
        phases = Counter(phase(o) for o in items.values())
        reasons = Counter(cond(o, "Completed").get("reason") for o in items.values())
        final = [n for n, o in items.items() if phase(o) in FINAL]
        never = [n for n in final if phase(items[n]) != "Skipped" and reached.get(n, 0) == 0]
        unknown = [n for n, o in items.items() if cond(o, "Completed").get("reason") == "OutcomeUnknown"]
        # Failed although the side effect did happen once: not a duplicate, but the status should
        # say so; kept visible with sample messages.
        failed_after_effect = [n for n, o in items.items() if phase(o) == "Failed" and effects.get(n, 0) > 0]
        succeeded_without_effect = [n for n in final if phase(items[n]) == "Succeeded" and effects.get(n, 0) == 0]

        def sample(names: list[str]) -> list[dict[str, Any]]:
            out = []
            for n in sorted(names)[:4]:
                c = cond(items[n], "Completed")
                target = n if kind_of[n] == "http" else f"{PREFIX[kind_of[n]]}-{n.split('-')[1]}"
                out.append({"name": n, "reason": c.get("reason"), "message": str(c.get("message"))[:300],
                            "attempts": (items[n].get("status") or {}).get("attempts"),
                            "writesToTarget": [x for x in any_writes.get(target, []) if x[1] != "create"][:6]})
            return out

        by_kind: dict[str, dict[str, Any]] = {}
        for kind in SIZES:
            names = [n for n, k in kind_of.items() if k == kind]
            by_kind[kind] = {
                "created": len(names), "phases": dict(Counter(phase(items.get(n, {})) for n in names)),
                "sideEffects": sum(effects[n] for n in names), "duplicates": sum(1 for n in names if n in dup),
                "never_executed": sum(1 for n in names if n in never),
                "outcome_unknown": sum(1 for n in names if n in unknown)}
        events = client.CoreV1Api(kube_admin).list_namespaced_event(ns).items
        figures = {
            "seed": seed, "full": FULL, "remediations": len(specs), "created": len(items), "final": len(final),
            "lost": len(specs) - len(final), "finalWaitSeconds": FINAL_WAIT,
            "duplicates_audit": sum(1 for n in dup if kind_of[n] != "http"),
            "duplicates_http": sum(1 for n in dup if kind_of[n] == "http"),
            "never_executed": len(never), "outcome_unknown": len(unknown),
            "never_executed_and_outcome_unknown": len(set(never) & set(unknown)),
            "wrong_end_state": len(wrong_end_state),
            "failed_after_effect": len(failed_after_effect),
            "succeeded_without_effect": len(succeeded_without_effect),
            "succeededWithoutEffectSamples": sample(succeeded_without_effect),
            "neverExecutedSamples": sample(never),
            "possible_duplicates_audit": len(possible_dup),
            "possibleDuplicateSamples": sample(list(possible_dup)),
            "auditAmbiguousWrites": sum(ambiguous_by_name.values()),
            "beyond_plan": len(beyond_plan),
            "failedAfterEffectSamples": [[n, cond(items[n], "Completed").get("reason"),
                                          str(cond(items[n], "Completed").get("message"))[:200]]
                                         for n in sorted(failed_after_effect)[:3]],
            "kills": kills, "operatorStarts": op.starts, "faultInjected": len(faulty),
            "inFlightAtKills": dict(kill_phases), "phases": dict(phases), "reasons": dict(reasons),
            "byAction": by_kind, "auditEffectiveWrites": sum(writes_by_name.values()),
            "demoReconcileRuns": int(stats.get("reconcile_runs", 0)),
            "resumedEvents": sum(1 for e in events if e.reason == "Resumed"),
            "seconds": round(elapsed, 1),
            "witnesses": {"workloads": "kube-apiserver audit log, 2xx writes by " + OPERATOR_USER,
                          "http": "demo reconcile runs_by_caller"},
        }
        record("crash-consistency" if FULL else "crash-consistency-ci", figures)
        assert kills >= MIN_KILLS
        assert not dup, f"side effect applied more than once: {dup}"
        assert figures["lost"] == 0, {n: (o.get("status") or {}).get("phase") for n, o in items.items()
                                      if phase(o) not in FINAL}
        assert not wrong_end_state, wrong_end_state
        assert not beyond_plan, f"targets changed beyond their single planned change: {beyond_plan}"
        # Actions with a probe (all workload actions) must never end without acting.
        workload_never = [n for n in never if kind_of[n] != "http"]
        assert not workload_never, [(n, items[n].get("status", {}).get("conditions")) for n in workload_never[:5]]
        # OutcomeUnknown only for HTTP endpoints (no probe can tell for those).
        assert all(kind_of[n] == "http" for n in unknown), [n for n in unknown if kind_of[n] != "http"]
        assert figures["demoReconcileRuns"] == sum(runs_by_caller.values())
        assert op.alive
    finally:
        op.stop()
        demo.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
