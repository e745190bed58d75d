"""The local control plane behaves like a real cluster: RBAC, controllers, rollouts, pod status.

Why: every other integration test and the demo rely on these properties; if one breaks
(bad flag, missing controller, fake kubelet bug) this file says which.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.kubelet import mark_oomkilled
from tests.fixtures.cluster import NODE, api_client_for, user_client, write_pod_status

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or probe}")
        time.sleep(0.2)


def deployment(name: str, replicas: int = 2) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="app", image="registry.invalid/app:1")]))))


def owned_replicasets(apps: Any, ns: str, name: str) -> list[Any]:
    return [rs for rs in apps.list_namespaced_replica_set(ns).items
            if any(o.name == name for o in rs.metadata.owner_references or [])]


def test_ready_and_rbac_enforced(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                 k8s_namespace: str) -> None:
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout == "ok"
    client.CoreV1Api(kube_admin).list_namespaced_secret(k8s_namespace)
    with user_client(control_plane, "alice") as alice, pytest.raises(ApiException) as denied:
        client.CoreV1Api(alice).list_namespaced_secret(k8s_namespace)
    assert denied.value.status == 403
    can = control_plane.kubectl("auth", "can-i", "list", "secrets", "--as=alice",
                                "--as-group=remedy-users", "-n", k8s_namespace, check=False)
    assert can.stdout.strip() == "no"


def test_service_account_kubeconfig_is_subject_to_rbac(
        control_plane: ControlPlane, k8s_namespace: str, tmp_path: Path) -> None:
    path = control_plane.service_account_kubeconfig(k8s_namespace, "remedy-operator",
                                                    tmp_path / "sa.kubeconfig")
    with api_client_for(path) as sa:
        core = client.CoreV1Api(sa)
        with pytest.raises(ApiException) as denied:
            core.list_namespaced_pod(k8s_namespace)
        assert denied.value.status == 403
        control_plane.kubectl("-n", k8s_namespace, "create", "rolebinding", "view",
                              "--clusterrole=view", f"--serviceaccount={k8s_namespace}:remedy-operator")
        eventually(lambda: _can_list_pods(core, k8s_namespace), 10, "rolebinding to apply")


def _can_list_pods(core: Any, ns: str) -> bool:
    try:
        core.list_namespaced_pod(ns)
        return True
    except ApiException:
        return False


def test_deployment_gets_replicaset_pods_and_rolls_out(kube_admin: client.ApiClient,
                                                       k8s_namespace: str) -> None:
    # Any: the generated models make every field Optional; the assertions check them.
    apps: Any = client.AppsV1Api(kube_admin)
    core: Any = client.CoreV1Api(kube_admin)
    ns = k8s_namespace
    apps.create_namespaced_deployment(ns, deployment("web"))
    first = eventually(lambda: owned_replicasets(apps, ns, "web"), what="ReplicaSet")

    def running() -> list[Any] | None:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        ok = len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
        return pods if ok else None
    pods = eventually(running, what="2 running pods")
    assert {p.spec.node_name for p in pods} == {NODE}
    eventually(lambda: apps.read_namespaced_deployment("web", ns).status.available_replicas == 2,
               what="deployment available")

    # A rollout, as `kubectl rollout restart` does it.
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}})
    rss = eventually(lambda: r if len(r := owned_replicasets(apps, ns, "web")) == 2 else None,
                     what="second ReplicaSet")
    new = next(rs for rs in rss if rs.metadata.name != first[0].metadata.name)

    def rolled_out() -> bool:
        d = apps.read_namespaced_deployment("web", ns)
        return (d.status.observed_generation == d.metadata.generation
                and d.status.updated_replicas == 2 and d.status.available_replicas == 2
                and (d.status.replicas or 0) == 2)
    eventually(rolled_out, what="rollout complete")
    # Old pods linger as Terminating until the fake kubelet finishes their deletion.
    eventually(lambda: {p.metadata.owner_references[0].name for p in core.list_namespaced_pod(
        ns, label_selector="app=web").items} == {new.metadata.name}, what="old pods gone")

    # Garbage collection: deleting the Deployment removes its ReplicaSets and pods.
    apps.delete_namespaced_deployment("web", ns)
    eventually(lambda: not owned_replicasets(apps, ns, "web") and not core.list_namespaced_pod(
        ns, label_selector="app=web").items, what="garbage collection")


def test_pod_status_written_like_a_kubelet(kube_admin: client.ApiClient, k8s_namespace: str) -> None:
    core: Any = client.CoreV1Api(kube_admin)
    ns = k8s_namespace
    # A scheduler nobody runs: the fake kubelet loop leaves this pod to the test.
    pod = core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name="mem"),
        spec=client.V1PodSpec(scheduler_name="manual", containers=[
            client.V1Container(name="app", image="registry.invalid/app:1")])))
    assert pod.status.phase == "Pending"
    write_pod_status(core, pod, restart_count=3, last_terminated_reason="OOMKilled")
    got = core.read_namespaced_pod("mem", ns)
    assert got.spec.node_name == NODE
    assert got.status.phase == "Running"
    cs = got.status.container_statuses[0]
    assert (cs.restart_count, cs.ready) == (3, True)
    assert cs.last_state.terminated.reason == "OOMKilled"
    assert cs.last_state.terminated.exit_code == 137
    assert next(c for c in got.status.conditions if c.type == "Ready").status == "True"

    again: Any = mark_oomkilled(core, ns, "mem")
    assert again.status.container_statuses[0].restart_count == 4


def test_namespace_deletion_finalizes(kube_admin: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(kube_admin)
    apps: Any = client.AppsV1Api(kube_admin)
    ns = f"t-finalize-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    apps.create_namespaced_deployment(ns, deployment("web", replicas=1))
    eventually(lambda: any(p.status.phase == "Running" for p in core.list_namespaced_pod(
        ns).items), what="running pod")
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
            return False
        except ApiException as exc:
            return bool(exc.status == 404)
    eventually(gone, timeout=90, what="namespace finalized")
