"""Shards on the real control plane (issue 16): two replicas with REMEDY_SHARDS=2 split
Remediations over 20 namespaces by Lease; one is SIGKILLed mid-run, the other takes its shard
within the lease time and finishes its work. Witness: the API server's audit log (each
Deployment written by the operator exactly once) and the Deployments themselves.

This is bench/shards.py at smoke size; the full run (2,000 Remediations) is its documented
command (docs/benchmarks.md). The second test starts one replica alone (it takes both shards),
then the other (it asks for its shard back and gets it), then sends an alert group to the first
replica for policies in both shards: the other shard's alerts are forwarded to its holder."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from remedy.base.constants import GROUP, SHARD_LEASE_PREFIX, VERSION
from remedy.runtime.shards import shard_of
from remedy_devenv.cluster import OPERATOR_USER, ControlPlane
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.testkit import alert, bench_module, executor_pid, free_ports, wait_for
from tests.fixtures.helpers import results_dir

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

N, NAMESPACES, LEASE = 200, 20, 6.0
# The lease as the survivor's clock sees it: from its first sight of the last renewal (up to one
# lease round, lease/10, after it) to the round after expiry, plus the test's 0.2 s poll.
TAKEOVER_BOUND = LEASE + 2 * LEASE / 10 + 0.5


def test_two_shards_split_the_work_and_survive_a_sigkill(control_plane: ControlPlane, crds: None, tmp_path: Path) -> None:
    result = bench_module("shards").run_shards(control_plane, N, NAMESPACES, tmp_path, lease_seconds=LEASE, timeout=300)
    (results_dir() / "shards-smoke.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    assert result["leasesAtStart"] == [True, True], result
    assert result["lost"] == 0 and result["phases"] == {"Succeeded": N}, result
    assert result["duplicates"] == 0, result
    assert result["deploymentsWritten"] == N and result["deploymentsAtTwoReplicas"] == N, result
    assert result["takeoverSeconds"] is not None and result["takeoverSeconds"] <= TAKEOVER_BOUND, result
    # Both shards hold work, and before the kill each replica finished only its own shard's.
    assert min(result["perShard"]["remediations"]) > 0, result
    assert result["finishedBeforeKill"]["replica0"] > 0 and result["finishedBeforeKill"]["replica1"] > 0, result
    assert result["finishedOutsideOwnShardByReplica1"] == 0, result
    assert result["survivorAlive"], result


def _namespace_in(shard: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(100) if shard_of(f"{prefix}-{i}", 2) == shard)


def test_a_shard_is_handed_back_and_its_alerts_are_forwarded_to_its_holder(control_plane: ControlPlane, crds: None,
                                                               kube_admin: client.ApiClient, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    prefix = f"fw{run}"
    spaces = [_namespace_in(0, prefix), _namespace_in(1, prefix)]
    core, co = client.CoreV1Api(kube_admin), client.CustomObjectsApi(kube_admin)
    lease_ns = f"{prefix}-leases"
    for ns in [*spaces, lease_ns]:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    for ns in spaces:
        co.create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": "notify-on-alert"},
            "spec": {"trigger": {"alert": {"alertname": f"Fw{run}"}},
                     "template": {"action": {"notify": {"message": "alert {{ labels.svc }}"}}}}})
    ports = free_ports(2)
    replicas = [OperatorProcess(control_plane.user_kubeconfig(OPERATOR_USER), tmp_path / f"op-{i}.log", env={
        "REMEDY_SHARDS": "2", "REMEDY_SHARD_INDEX": str(i), "REMEDY_SHARD_LEASE_SECONDS": str(LEASE),
        "REMEDY_NAMESPACE": lease_ns, "REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": str(ports[i]),
        "REMEDY_WEBHOOK_ADVERTISE_URL": f"http://127.0.0.1:{ports[i]}/alertmanager"}, args=["-n", f"{prefix}-*"])
        for i in (0, 1)]
    coord = client.CoordinationV1Api(kube_admin)

    def holder(shard: int) -> str:
        try:
            return str(coord.read_namespaced_lease(f"{SHARD_LEASE_PREFIX}{shard}", lease_ns).spec.holder_identity)
        except client.ApiException:
            return ""

    try:
        # Replica 0 alone takes its shard at once and shard 1 after one lease of grace; replica 1
        # then asks for its shard back, and replica 0 hands it over.
        replicas[0].start()
        replicas[0].wait_ready(60)
        pid0 = replicas[0].proc.pid  # type: ignore[union-attr]
        wait_for(lambda: all(executor_pid(holder(s)) == pid0 for s in (0, 1)), 60, "replica 0 holds both shards")
        replicas[1].start()
        replicas[1].wait_ready(60)

        def leases_held() -> bool:
            holders = [holder(s) for s in (0, 1)]
            return all(executor_pid(h) == op.proc.pid for op, h in zip(replicas, holders, strict=True))  # type: ignore[union-attr]

        wait_for(leases_held, 3 * LEASE, "shard 1 handed back: each replica holds its own shard")
        time.sleep(LEASE / 10 * 2)  # two lease rounds: each replica has read the other's Lease
        wait_for(lambda: all(json.load(urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=5))["policies"] == 2
                             for p in ports), 60, "both replicas index both policies")
        body = {"version": "4", "status": "firing", "receiver": "remedy", "groupKey": f"fw{run}", "groupLabels": {},
                "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                "alerts": [alert(f"fp{run}", alertname=f"Fw{run}", svc="web")]}
        req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/alertmanager", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.load(resp)
        assert answer["outcomes"].get("forwarded") == 1 or answer["outcomes"].get("queued"), answer

        def children(ns: str) -> list[dict[str, Any]]:
            return list(co.list_namespaced_custom_object(GROUP, VERSION, ns, "remediations")["items"])

        wait_for(lambda: all(len(children(ns)) == 1 for ns in spaces), 60, "one child in each shard's namespace")
        time.sleep(2)
        assert [len(children(ns)) for ns in spaces] == [1, 1]
        # The child in shard 1's namespace was created by replica 1 (the forward reached it) and
        # run by it; replica 0 forwarded and did not fall back.
        log0 = (tmp_path / "op-0.log").read_text(errors="replace")
        assert "handling them here" not in log0, log0[-2000:]
        child1 = children(spaces[1])[0]
        wait_for(lambda: (co.get_namespaced_custom_object(GROUP, VERSION, spaces[1], "remediations",
                                                          child1["metadata"]["name"]).get("status") or {}).get("phase")
                 == "Succeeded", 60, "shard 1's child Succeeded")
        executor = co.get_namespaced_custom_object(GROUP, VERSION, spaces[1], "remediations",
                                                   child1["metadata"]["name"])["status"]["executor"]
        assert executor_pid(executor) == replicas[1].proc.pid, executor  # type: ignore[union-attr]
    finally:
        for op in replicas:
            op.stop()
        for ns in [*spaces, lease_ns]:
            core.delete_namespace(ns)
