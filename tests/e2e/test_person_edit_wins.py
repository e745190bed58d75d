"""Issue 21 item 3: a person's edit wins, on the real control plane.

The engine (engine/lifecycle.py, real registry, Remediations in the in-process fake store) acts
on real Deployments. Between the engine confirming its attempt and its write to the target
(the ``after_fence`` hook), a person changes the Deployment with their own field manager. The
write's precondition fails (nothing is written) and the Remediation ends Skipped, reason
TargetChanged, naming the field, the value now and the manager that changed it, read from the
Deployment's managedFields. The Deployment keeps the person's value. With
``onTargetChanged: Replan`` the engine plans again from the changed target instead.
Witness: the API server's audit log counts the operator's effective writes of the Deployment
(tests run the engine with the operator's own identity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from remedy.actions.registry import REGISTRY
from remedy.base.constants import REMEDIATIONS
from remedy.clients.kube import KubeClient
from remedy.lifecycle.machine import Lifecycle as Engine
from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import OPERATOR_USER
from remedy_devenv.kubelet import mark_oomkilled, mark_pods_running
from remedy_devenv.testkit import make_deployment, wait_for
from tests.fixtures.actions import make_ctx
from tests.fixtures.cluster import api_client_for
from tests.fixtures.fakes import FakeRecorder, FakeStore
from tests.fixtures.operator import make_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

Edit = Callable[[client.AppsV1Api, str], None]


def _scale_to_5(apps: client.AppsV1Api, ns: str) -> None:
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}}, field_manager="kubectl-scale")


def _new_limit(apps: client.AppsV1Api, ns: str) -> None:
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "resources": {"limits": {"memory": "300Mi"}}}]}}}}, field_manager="alice-kubectl")


def _new_release(apps: client.AppsV1Api, ns: str) -> None:
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:3"}]}}}}, field_manager="argocd-controller")


CASES: dict[str, tuple[dict[str, Any], Edit, str, Any]] = {
    # name: (spec.action, the person's edit, the field named, its value now)
    "scale replicas": ({"scaleWorkload": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 3}},
                       _scale_to_5, "spec.replicas", 5),
    "scale delta": ({"scaleWorkload": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1}},
                    _scale_to_5, "spec.replicas", 5),
    "memory": ({"raiseMemoryOnOOM": {"target": {"kind": "Deployment", "name": "web"}, "maxLimit": "1Gi"}},
               _new_limit, "spec.template.spec.containers.0.resources.limits.memory", "300Mi"),
    "rollback": ({"rollbackWorkload": {"target": {"name": "web"}}},
                 _new_release, "spec.template.spec.containers.0.image", "example/app:3"),
    "restart": ({"restartWorkload": {"target": {"kind": "Deployment", "name": "web"}}},
                _new_release, "metadata.generation", None),
}
MANAGERS = {_scale_to_5: "kubectl-scale", _new_limit: "alice-kubectl", _new_release: "argocd-controller"}


@pytest.fixture(scope="module")
def operator_api(control_plane: Any) -> Iterator[client.ApiClient]:
    api = api_client_for(control_plane.user_kubeconfig(OPERATOR_USER))
    yield api
    api.close()


def prepare(kube_admin: client.ApiClient, ns: str) -> None:
    """web: 2 replicas, two revisions (example/app:1 then :2), pods Running and OOMKilled."""
    core, apps = client.CoreV1Api(kube_admin), client.AppsV1Api(kube_admin)
    make_deployment(kube_admin, ns, "web", replicas=2, memory="128Mi", image="example/app:1")
    wait_for(lambda: len(mark_pods_running(core, ns, "app=web")) == 2, what="pods of revision 1")
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:2"}]}}}})

    def rolled() -> bool:
        dep = apps.read_namespaced_deployment("web", ns)
        mark_pods_running(core, ns, "app=web")
        return dep.status.observed_generation == dep.metadata.generation and dep.status.updated_replicas == 2
    wait_for(rolled, timeout=60, what="revision 2 rolled out")
    for pod in core.list_namespaced_pod(ns, label_selector="app=web").items:
        if pod.metadata.deletion_timestamp is None:
            mark_oomkilled(core, ns, pod.metadata.name)


def run_engine(operator_api: client.ApiClient, ns: str, action: dict[str, Any], edit: Edit | None,
               person: client.AppsV1Api, **spec: Any) -> tuple[FakeStore, FakeRecorder, Engine]:
    store, recorder = FakeStore(), FakeRecorder()
    kube = KubeClient(operator_api)

    def context(obj: dict[str, Any]) -> Any:
        meta = obj["metadata"]
        return make_ctx({}, namespace=ns, name=meta["name"], uid=meta["uid"], kube=kube)

    async def person_edits(obj: dict[str, Any]) -> None:
        if edit is not None and obj["status"]["attempts"] == 1:
            edit(person, ns)

    engine = Engine(store=store, recorder=recorder, registry=REGISTRY, context_factory=context,
                    hooks={"after_fence": person_edits})
    store.add(REMEDIATIONS, {"metadata": {"name": "r", "namespace": ns},
                             "spec": {"reason": "issue 21", "action": action, **spec}})
    return store, recorder, engine


@pytest.mark.parametrize("case", list(CASES))
async def test_a_persons_edit_wins(case: str, control_plane: Any, kube_admin: client.ApiClient,
                                   operator_api: client.ApiClient) -> None:
    action, edit, field, value = CASES[case]
    ns = make_namespace(kube_admin, "edit")
    apps = client.AppsV1Api(kube_admin)
    try:
        prepare(kube_admin, ns)
        store, _recorder, engine = run_engine(operator_api, ns, action, edit, apps)
        assert await engine.reconcile(ns, "r") == "Skipped"
        st = store.obj(REMEDIATIONS, "r", ns)["status"]
        completed = next(c for c in st["conditions"] if c["type"] == "Completed")
        assert completed["reason"] == "TargetChanged", st["message"]
        manager = MANAGERS[edit]
        assert f"{field} was " in st["message"] and manager in st["message"], st["message"]
        changed = {c["field"]: c for c in st["result"]["targetChanged"]}
        # metadata.generation has no owner: the writers of the latest second are named
        assert changed[field]["manager"] == manager or manager in changed[field]["manager"].split(" or ")
        if value is not None:
            assert changed[field]["now"] == value
        assert await engine.reconcile(ns, "r") == "Skipped"  # final: never planned again
        dep = apps.read_namespaced_deployment("web", ns)
        if case.startswith("scale"):
            assert dep.spec.replicas == 5
        elif case == "memory":
            assert dep.spec.template.spec.containers[0].resources.limits["memory"] == "300Mi"
        else:
            assert dep.spec.template.spec.containers[0].image == "example/app:3"
            assert "remedy.dev/restarted-by" not in (dep.spec.template.metadata.annotations or {})
        audit = AuditCounter(control_plane.audit_log, OPERATOR_USER, ns)
        audit.settle()
        assert audit.count("deployments", "web") == 0, "the operator wrote over the person's edit"
    finally:
        client.CoreV1Api(kube_admin).delete_namespace(ns)


async def test_replan_when_the_spec_asks_for_it(control_plane: Any, kube_admin: client.ApiClient,
                                                operator_api: client.ApiClient) -> None:
    """onTargetChanged: Replan plans again from the changed target: a delta of +1 over the
    person's 5 makes 6 (the person's edit is the new starting point, not undone)."""
    ns = make_namespace(kube_admin, "edit")
    apps = client.AppsV1Api(kube_admin)
    try:
        prepare(kube_admin, ns)
        store, recorder, engine = run_engine(operator_api, ns, CASES["scale delta"][0], _scale_to_5, apps,
                                             onTargetChanged="Replan")
        with pytest.raises(Exception) as info:
            await engine.reconcile(ns, "r")
        assert getattr(info.value, "reason", None) == "TargetChanged"
        assert "TargetChanged" in recorder.reasons("r")
        assert await engine.reconcile(ns, "r") == "Succeeded"
        assert apps.read_namespaced_deployment("web", ns).spec.replicas == 6
        assert store.obj(REMEDIATIONS, "r", ns)["status"]["plan"]["from"] == 5
    finally:
        client.CoreV1Api(kube_admin).delete_namespace(ns)
