"""Shipping remedy: the Helm chart, the kustomize overlays and their RBAC, on the real control plane.

Tools come from scripts/build-tools (helm, kubeconform, built from the Go module proxy and
cached). kubeconform cannot download its usual schemas here (no internet), so the schemas are
generated: built-in kinds from this control plane's own /openapi/v2 (the exact API the objects
are applied to) and remedy's/kopf's CRDs from their YAML, both by scripts/crd-to-jsonschema.py,
strict (unknown fields fail). Only the Prometheus Operator kinds (ServiceMonitor,
PrometheusRule) have no schema source offline; they are skipped by kubeconform and checked
field by field below.

The least-privilege proof runs the real operator process under a token of the chart's
ServiceAccount bound only to the chart's rendered ClusterRole.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.operator import OperatorProcess
from tests.fixtures.operator import condition, create_rem, wait_phase

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "remedy"
# An HTTP 403 or a Forbidden reason in a log line, but not a timestamp's milliseconds (",403").
FORBIDDEN_IN_LOG = re.compile(r"(?<![,.:\d])\b403\b|Forbidden")
SCHEMA_TEMPLATE = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"


# --- tools and rendering ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """helm and kubeconform from scripts/build-tools (cached after the first build)."""
    res = subprocess.run([str(REPO / "scripts" / "build-tools")], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    paths = [Path(p) for p in res.stdout.split()]
    return {p.name: p for p in paths}


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm")
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}


def helm(tools: dict[str, Path], env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(tools["helm"]), *args], capture_output=True, text=True, env=env, timeout=180)
    if check:
        assert res.returncode == 0, f"helm {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


def render(tools: dict[str, Path], env: dict[str, str], *sets: str, release: str = "remedy",
           namespace: str = "remedy-system", crds: bool = False) -> str:
    args = ["template", release, str(CHART), "-n", namespace]
    if crds:
        args.append("--include-crds")
    for s in sets:
        args += ["--set", s]
    return helm(tools, env, *args).stdout


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def rules_of(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: comparable regardless of how rules are grouped."""
    return {(g, r, v) for rule in obj["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


NAMESPACED_MODE = ("watch.mode=namespaced", "watch.namespaces={apps,shop}")


# --- static checks ----------------------------------------------------------------------------


def test_chart_crds_are_identical_copies_of_crds() -> None:
    """charts/remedy/crds/ must be byte-identical to the generated crds/ (fix: cp crds/*.yaml charts/remedy/crds/)."""
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty"
    chart_own = sorted(p.name for p in (CHART / "crds").glob("remedy.dev_*.yaml"))
    assert chart_own == generated
    for name in generated:
        assert filecmp.cmp(REPO / "crds" / name, CHART / "crds" / name, shallow=False), \
            f"charts/remedy/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/remedy/crds/"
    # kopf's peering CRDs: one copy for the chart, one for the kustomize base.
    assert filecmp.cmp(CHART / "crds" / "kopf.dev_peerings.yaml", REPO / "deploy/base/kopf.dev_peerings.yaml", shallow=False)
    peering = {d["metadata"]["name"]: d for d in docs((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())}
    assert peering["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert peering["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"


def test_helm_lint(tools: dict[str, Path], helm_env: dict[str, str]) -> None:
    helm(tools, helm_env, "lint", "--strict", str(CHART))
    helm(tools, helm_env, "lint", "--strict", str(CHART), "--set", NAMESPACED_MODE[0], "--set", NAMESPACED_MODE[1])
    # values.schema.json rejects a namespaced install without namespaces, and unknown keys.
    bad = helm(tools, helm_env, "template", str(CHART), "--set", "watch.mode=namespaced", check=False)
    assert bad.returncode != 0 and "namespaces" in bad.stderr
    bad = helm(tools, helm_env, "template", str(CHART), "--set", "actions.workload.enabeld=false", check=False)
    assert bad.returncode != 0 and "enabeld" in bad.stderr


@pytest.fixture(scope="session")
def schemas(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Strict JSON schemas: built-in kinds from the control plane's /openapi/v2, CRDs from YAML."""
    out = tmp_path_factory.mktemp("schemas")
    openapi = out / "openapi-v2.json"
    openapi.write_text(control_plane.kubectl("get", "--raw", "/openapi/v2").stdout)
    conv = [sys.executable, str(REPO / "scripts/crd-to-jsonschema.py")]
    subprocess.run([*conv, "openapi", str(openapi), "-o", str(out)], check=True, capture_output=True)
    crd_files = [str(p) for p in sorted((CHART / "crds").glob("*.yaml"))]
    subprocess.run([*conv, "crd", *crd_files, "-o", str(out)], check=True, capture_output=True)
    assert (out / "apps" / "deployment_v1.json").exists() and (out / "remedy.dev" / "remediation_v1alpha1.json").exists()
    return out


def kubeconform(tools: dict[str, Path], schemas: Path, manifests: str, *extra: str) -> dict[str, Any]:
    res = subprocess.run(
        [str(tools["kubeconform"]), "-strict", "-summary", "-output", "json",
         "-schema-location", str(schemas / SCHEMA_TEMPLATE), *extra, "-"],
        input=manifests, capture_output=True, text=True, timeout=120,
    )
    report: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == 0, json.dumps(report["resources"], indent=1)
    return report


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_rendered_chart_passes_kubeconform_strict(tools: dict[str, Path], helm_env: dict[str, str], schemas: Path, mode: str) -> None:
    sets = NAMESPACED_MODE if mode == "namespaced" else ()
    report = kubeconform(tools, schemas, render(tools, helm_env, *sets, crds=True))
    s = report["summary"]
    assert s["invalid"] == 0 and s["errors"] == 0 and s["skipped"] == 0 and s["valid"] >= 10, s
    # The schemas are strict: a misspelt field is caught, not ignored.
    broken = render(tools, helm_env, *sets).replace("replicas: 2", "replica: 2")
    res = subprocess.run([str(tools["kubeconform"]), "-strict", "-schema-location", str(schemas / SCHEMA_TEMPLATE), "-"],
                         input=broken, capture_output=True, text=True)
    assert res.returncode != 0 and "replica" in res.stdout


def test_sharded_chart_is_a_statefulset_with_lease_rights_and_no_peering(tools: dict[str, Path], helm_env: dict[str, str],
                                                                        schemas: Path) -> None:
    """shards: 3 -> one StatefulSet pod per shard (ordinal = preferred shard), REMEDY_SHARDS, the
    advertised webhook address for forwarded alerts, Lease get/create/update in the release
    namespace only, and no kopf peering (shards replace it)."""
    text = render(tools, helm_env, "shards=3", crds=True)
    s = kubeconform(tools, schemas, text)["summary"]
    assert s["invalid"] == 0 and s["errors"] == 0 and s["skipped"] == 0, s
    objs = docs(render(tools, helm_env, "shards=3"))
    assert not [o for o in objs if o["kind"] in ("Deployment", "ClusterKopfPeering", "KopfPeering")]
    sts = one(objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert "--peering" not in c["args"] and c["args"][0] == "run"
    env = {e["name"]: e for e in c["env"]}
    assert env["REMEDY_SHARDS"]["value"] == "3"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["REMEDY_WEBHOOK_ADVERTISE_URL"]["value"] == "http://$(POD_IP):18080/alertmanager"
    assert list(env).index("POD_IP") < list(env).index("REMEDY_WEBHOOK_ADVERTISE_URL")  # $(VAR) needs it first
    role = one(objs, "Role", "remedy-shards")
    assert role["metadata"]["namespace"] == "remedy-system"
    assert rules_of(role) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    # Not sharded (the default): a Deployment, no Lease grant.
    plain = docs(render(tools, helm_env))
    assert one(plain, "Deployment") and not [o for o in plain if o["kind"] == "Role" and "shards" in o["metadata"]["name"]]


def test_kustomize_overlays_pass_kubeconform_strict(control_plane: ControlPlane, tools: dict[str, Path], schemas: Path) -> None:
    for overlay in ("cluster-wide", "namespaced"):
        built = control_plane.kubectl("kustomize", str(REPO / "deploy/overlays" / overlay)).stdout
        s = kubeconform(tools, schemas, built)["summary"]
        assert s["invalid"] == 0 and s["errors"] == 0 and s["skipped"] == 0, (overlay, s)
    s = kubeconform(tools, schemas, (REPO / "deploy/prometheusrule.yaml").read_text(), "-skip", "PrometheusRule")["summary"]
    assert s["errors"] == 0


def test_deployment_shape_and_security_context(tools: dict[str, Path], helm_env: dict[str, str]) -> None:
    objs = docs(render(tools, helm_env, "prometheusUrl=http://prometheus.monitoring:9090"))
    dep = one(objs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    (c,) = spec["containers"]
    assert c["image"] == "ghcr.io/remedy-dev/remedy:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert c["args"][:3] == ["run", "--peering", "remedy"] and c["args"][-1] == "-A"
    assert "--liveness" in c["args"] and c["args"][c["args"].index("--liveness") + 1] == "http://0.0.0.0:8082/healthz"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-liveness"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http-webhook": 18080, "http-metrics": 18081, "http-liveness": 8082}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["REMEDY_WEBHOOK_HOST"] == "0.0.0.0"
    assert env["REMEDY_PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"
    token_file = Path(env["REMEDY_WEBHOOK_TOKEN_FILE"])
    mount = next(m for m in c["volumeMounts"] if m["name"] == "webhook-token")
    assert str(token_file.parent) == mount["mountPath"] and mount["readOnly"] is True
    vol = next(v for v in spec["volumes"] if v["name"] == "webhook-token")
    secret = one(objs, "Secret")
    assert vol["secret"]["secretName"] == secret["metadata"]["name"] and token_file.name in secret["data"]
    # Hardening.
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Service ports by name.
    svc = one(objs, "Service")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http-webhook": 18080, "http-metrics": 18081}
    # No Prometheus URL: the variable is not set at all (the operator treats unset as "none").
    c2 = one(docs(render(tools, helm_env)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "REMEDY_PROMETHEUS_URL" not in {e["name"] for e in c2["env"]}
    assert "REMEDY_ESCALATION_WEBHOOK" not in {e["name"] for e in c2["env"]}
    # The escalation webhook URL (it embeds a token) comes from a Secret, never a plain value.
    c3 = one(docs(render(tools, helm_env, "escalation.webhookSecretRef.name=oncall-hook")),
             "Deployment")["spec"]["template"]["spec"]["containers"][0]
    hook = next(e for e in c3["env"] if e["name"] == "REMEDY_ESCALATION_WEBHOOK")
    assert hook == {"name": "REMEDY_ESCALATION_WEBHOOK",
                    "valueFrom": {"secretKeyRef": {"name": "oncall-hook", "key": "url"}}}, hook


def test_rbac_is_least_privilege_and_follows_action_toggles(control_plane: ControlPlane, tools: dict[str, Path], helm_env: dict[str, str]) -> None:
    cw = docs(render(tools, helm_env))
    grants = rules_of(one(cw, "ClusterRole", "remedy"))
    assert ("", "secrets", "get") in grants
    assert not {("", "secrets", v) for v in ("list", "watch", "create", "update", "patch", "delete")} & grants
    # the one delete: remedy's own finished Remediations (history limits, ttlSecondsAfterFinished)
    assert not any(v in ("*", "delete", "deletecollection", "escalate", "bind", "impersonate") or "*" in (g, r)
                   for g, r, v in grants - {("remedy.dev", "remediations", "delete")}), "wildcards or dangerous verbs"
    for triple in [("apps", "deployments", "patch"), ("apps", "deployments/scale", "update"), ("", "pods/resize", "patch"),
                   ("apps", "replicasets", "list"), ("", "namespaces", "watch"), ("kopf.dev", "clusterkopfpeerings", "patch"),
                   ("apiextensions.k8s.io", "customresourcedefinitions", "watch"), ("remedy.dev", "remediations/status", "patch"),
                   ("remedy.dev", "remediations", "create"), ("remedy.dev", "remediations", "delete"),
                   ("events.k8s.io", "events", "create"), ("", "events", "create")]:
        assert triple in grants, triple
    crb = one(cw, "ClusterRoleBinding")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": one(cw, "ServiceAccount")["metadata"]["name"],
                                "namespace": "remedy-system"}]
    assert one(cw, "ClusterKopfPeering")["metadata"]["name"] == "remedy"

    no_workload = rules_of(one(docs(render(tools, helm_env, "actions.workload.enabled=false")), "ClusterRole", "remedy"))
    assert not {t for t in no_workload if t[0] == "apps" or t[1].startswith("pods")}
    assert grants - no_workload == {t for t in grants if t[0] == "apps" or t[1].startswith("pods") or t == ("", "events", "list")}
    no_resize = rules_of(one(docs(render(tools, helm_env, "actions.workload.inPlaceResize=false")), "ClusterRole", "remedy"))
    assert grants - no_resize == {("", "pods/resize", "patch")}
    no_secrets = rules_of(one(docs(render(tools, helm_env, *(f"actions.{a}.enabled=false" for a in
                                                              ("postgres", "mongo", "redis", "http", "idempotency")))), "ClusterRole", "remedy"))
    assert grants - no_secrets == {("", "secrets", "get")}

    ns = docs(render(tools, helm_env, *NAMESPACED_MODE))
    assert not [o for o in ns if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")]
    roles = [o for o in ns if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["apps", "shop"]
    assert sorted(o["metadata"]["namespace"] for o in ns if o["kind"] == "KopfPeering") == ["apps", "shop"]
    assert sorted(o["metadata"]["namespace"] for o in ns if o["kind"] == "RoleBinding") == ["apps", "shop"]
    cluster_only = {("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions"), ("kopf.dev", "clusterkopfpeerings")}
    assert rules_of(roles[0]) == {t for t in grants if t[:2] not in cluster_only} | {
        ("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    dep = one(ns, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert dep["args"][-4:] == ["-n", "apps", "-n", "shop"] and "-A" not in dep["args"]

    # The kustomize overlays grant exactly what the chart grants.
    kcw = docs(control_plane.kubectl("kustomize", str(REPO / "deploy/overlays/cluster-wide")).stdout)
    assert rules_of(one(kcw, "ClusterRole")) == grants
    kns = docs(control_plane.kubectl("kustomize", str(REPO / "deploy/overlays/namespaced")).stdout)
    assert not [o for o in kns if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert rules_of(one(kns, "Role")) == rules_of(roles[0])


def test_prometheus_rules(tools: dict[str, Path], helm_env: dict[str, str]) -> None:
    objs = docs(render(tools, helm_env, "metrics.prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true"))
    rule = one(objs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"RemediationFailures", "RemedyPolicyPaused", "RemediationStuckRunning", "RemedyAdmissionChecksNotInForce"}
    assert 'rate(remedy_remediations_total{phase="Failed"}' in alerts["RemediationFailures"]["expr"]
    assert "remedy_policies_paused" in alerts["RemedyPolicyPaused"]["expr"] and alerts["RemedyPolicyPaused"]["expr"].endswith("> 0")
    assert "remedy_remediations_started_total" in alerts["RemediationStuckRunning"]["expr"]
    assert "{{ $labels.action }}" in alerts["RemediationFailures"]["annotations"]["summary"]
    sm = one(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert not [o for o in docs(render(tools, helm_env)) if o["kind"] in ("PrometheusRule", "ServiceMonitor")]
    # deploy/prometheusrule.yaml carries the same rules.
    static = docs((REPO / "deploy/prometheusrule.yaml").read_text())[0]
    assert static["spec"] == rule["spec"]
    # Every metric the rules use is one remedy exports.
    import remedy.clients.admission_probe  # noqa: F401 - registers its metrics
    from remedy.base.observability import REGISTRY
    exported = {m.name for m in REGISTRY.collect()} | {s.name for m in REGISTRY.collect() for s in m.samples}
    for name in ("remedy_remediations_total", "remedy_remediations_started_total", "remedy_policies_paused",
                 "remedy_admission_checks_in_force"):
        assert name in exported or name.removesuffix("_total") in exported, name


# --- on the control plane ---------------------------------------------------------------------


def wait_for(fn: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def get_json(cp: ControlPlane, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cp.kubectl("get", *args, "-o", "json").stdout)
    return out


def running_pods(cp: ControlPlane, ns: str, selector: str) -> int:
    pods = get_json(cp, "pods", "-n", ns, "-l", selector)["items"]
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")


def restricted_namespace(cp: ControlPlane, name: str) -> None:
    """Pod Security admission 'restricted': the pods are only created if the chart's securityContext complies."""
    cp.kubectl("create", "namespace", name, check=False)
    cp.kubectl("label", "--overwrite", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")


def test_helm_install_cluster_wide_and_namespaced(control_plane: ControlPlane, tools: dict[str, Path], helm_env: dict[str, str]) -> None:
    cp = control_plane
    kc = ["--kubeconfig", str(cp.admin_kubeconfig)]
    restricted_namespace(cp, "helm-cw")
    helm(tools, helm_env, "install", "cw", str(CHART), "-n", "helm-cw", *kc, "--set", "peering.name=helm-cw")
    expected = {(o["kind"], o["metadata"]["name"]) for o in docs(render(tools, helm_env, "peering.name=helm-cw", release="cw", namespace="helm-cw"))}
    for kind, name in expected:
        args = [kind.lower(), name] if kind.startswith("Cluster") else [kind.lower(), name, "-n", "helm-cw"]
        assert get_json(cp, *args)["metadata"]["name"] == name
    for crd in ("remediations.remedy.dev", "remediationpolicies.remedy.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        get_json(cp, "crd", crd)
    installed = get_json(cp, "clusterrole", "cw-remedy")
    assert rules_of(installed) == rules_of(one(docs(render(tools, helm_env, release="cw", namespace="helm-cw")), "ClusterRole", "cw-remedy"))
    dep = get_json(cp, "deployment", "cw-remedy", "-n", "helm-cw")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # Pods are admitted under "restricted" and the fake kubelet reports them Running.
    wait_for(lambda: running_pods(cp, "helm-cw", "app.kubernetes.io/instance=cw") == 2, what="2 Running pods of the chart")
    # RBAC as the API server evaluates it, for the chart's ServiceAccount.
    sa = "system:serviceaccount:helm-cw:cw-remedy"
    def can(*args: str) -> bool:
        return cp.kubectl("auth", "can-i", "--as", sa, *args, check=False).stdout.strip() == "yes"
    assert can("get", "secrets", "-n", "default") and not can("list", "secrets", "-n", "default")
    assert not can("watch", "secrets", "-A")
    assert can("patch", "deployments.apps", "-n", "default") and can("patch", "pods", "--subresource=resize", "-n", "x")
    assert can("update", "deployments.apps", "--subresource=scale", "-n", "x")
    assert not can("delete", "deployments.apps", "-n", "default") and not can("create", "pods", "-n", "default")
    assert can("patch", "clusterkopfpeerings.kopf.dev")
    helm(tools, helm_env, "upgrade", "cw", str(CHART), "-n", "helm-cw", *kc, "--set", "peering.name=helm-cw",
         "--set", "actions.workload.enabled=false")
    assert not can("patch", "deployments.apps", "-n", "default") and can("get", "secrets", "-n", "default")

    # Namespaced mode: Roles in the watched namespaces only, no cluster-scoped grants.
    for ns in ("helm-a", "helm-b"):
        cp.kubectl("create", "namespace", ns, check=False)
    restricted_namespace(cp, "helm-ns")
    helm(tools, helm_env, "install", "nsd", str(CHART), "-n", "helm-ns", *kc,
         "--set", "watch.mode=namespaced", "--set", "watch.namespaces={helm-a,helm-b}")
    assert cp.kubectl("get", "clusterrole", "nsd-remedy", check=False).returncode != 0
    sa = "system:serviceaccount:helm-ns:nsd-remedy"
    for ns in ("helm-a", "helm-b"):
        assert rules_of(get_json(cp, "role", "nsd-remedy", "-n", ns))
        get_json(cp, "rolebinding", "nsd-remedy", "-n", ns)
        get_json(cp, "kopfpeering", "remedy", "-n", ns)
        assert can("patch", "deployments.apps", "-n", ns)
    assert not can("patch", "deployments.apps", "-n", "default") and not can("get", "secrets", "-n", "helm-ns")
    assert not can("list", "namespaces")
    args = get_json(cp, "deployment", "nsd-remedy", "-n", "helm-ns")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["-n", "helm-a", "-n", "helm-b"]
    wait_for(lambda: running_pods(cp, "helm-ns", "app.kubernetes.io/instance=nsd") == 2, what="2 Running pods (namespaced)")


def test_kubectl_apply_kustomize_overlays(control_plane: ControlPlane) -> None:
    cp = control_plane
    cp.kubectl("create", "namespace", "remedy-system", check=False)
    cp.kubectl("-n", "remedy-system", "create", "secret", "generic", "remedy-webhook",
               f"--from-literal=token={uuid.uuid4().hex}", check=False)
    cp.kubectl("apply", "-k", str(REPO / "deploy/overlays/cluster-wide"))
    ns = get_json(cp, "namespace", "remedy-system")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert get_json(cp, "clusterrolebinding", "remedy")["subjects"][0]["namespace"] == "remedy-system"
    get_json(cp, "clusterkopfpeering", "remedy")
    get_json(cp, "service", "remedy", "-n", "remedy-system")
    c = get_json(cp, "deployment", "remedy", "-n", "remedy-system")["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][-1] == "-A"
    wait_for(lambda: running_pods(cp, "remedy-system", "app.kubernetes.io/name=remedy") == 2, what="kustomize pods Running")

    cp.kubectl("create", "namespace", "apps", check=False)
    cp.kubectl("apply", "-k", str(REPO / "deploy/overlays/namespaced"))
    get_json(cp, "role", "remedy", "-n", "apps")
    get_json(cp, "kopfpeering", "remedy", "-n", "apps")
    assert get_json(cp, "rolebinding", "remedy", "-n", "apps")["subjects"][0] == {
        "kind": "ServiceAccount", "name": "remedy", "namespace": "remedy-system"}
    c = get_json(cp, "deployment", "remedy", "-n", "remedy-system")["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][-2:] == ["-n", "apps"] and "-A" not in c["args"]


# --- least privilege, with the real operator ---------------------------------------------------


LP_NS, LP_RELEASE, LP_PEERING = "remedy-lp", "lp", "remedy-lp"


def apply_rbac_from_chart(cp: ControlPlane, tools: dict[str, Path], helm_env: dict[str, str], *sets: str) -> dict[str, Any]:
    """Apply only what the operator's identity needs from the rendered chart: SA, ClusterRole(+Binding), peering."""
    objs = docs(render(tools, helm_env, f"peering.name={LP_PEERING}", *sets, release=LP_RELEASE, namespace=LP_NS))
    # The operator's own ClusterRole (the chart's ClusterRoles for people are named "<fullname>:...").
    wanted = [o for o in objs if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")
              and ":" not in o["metadata"]["name"]]
    assert len(wanted) == 4
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(wanted))
    return one(objs, "ClusterRole", f"{LP_RELEASE}-remedy")


@pytest.fixture
def lp_operator(control_plane: ControlPlane, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        op.stop()


def make_deployment(api: client.ApiClient, ns: str, name: str, replicas: int) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
    })


def test_least_privilege_operator_under_chart_rbac(control_plane: ControlPlane, tools: dict[str, Path], helm_env: dict[str, str],
                                                   kube_admin: client.ApiClient, k8s_namespace: str, tmp_path: Path,
                                                   lp_operator: list[OperatorProcess]) -> None:
    cp, ns = control_plane, k8s_namespace
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/remediations.remedy.dev",
               "crd/clusterkopfpeerings.kopf.dev")
    cp.kubectl("create", "namespace", LP_NS, check=False)
    role = apply_rbac_from_chart(cp, tools, helm_env)
    sa_name = f"{LP_RELEASE}-remedy"
    kubeconfig = cp.service_account_kubeconfig(LP_NS, sa_name, tmp_path / "sa.kubeconfig")
    # The operator's identity really is the ServiceAccount, bound to nothing but that ClusterRole.
    who = cp.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig).stdout
    assert who == f"system:serviceaccount:{LP_NS}:{sa_name}"
    bindings = get_json(cp, "clusterrolebindings")["items"]
    bound = [b["roleRef"]["name"] for b in bindings
             if any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name and s.get("namespace") == LP_NS
                    for s in b.get("subjects") or [])]
    assert bound == [role["metadata"]["name"]]
    assert cp.kubectl("auth", "can-i", "list", "secrets", "-n", ns, kubeconfig=kubeconfig, check=False).stdout.strip() == "no"

    def start_operator(tag: str) -> OperatorProcess:
        op = OperatorProcess(kubeconfig, tmp_path / f"operator-{tag}.log", env={"REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": "0"},
                             args=["-A", "--peering", LP_PEERING]).start()
        lp_operator.append(op)
        op.wait_ready(timeout=60)
        return op

    # (a) all actions enabled: scaleWorkload succeeds under exactly the chart's grants.
    make_deployment(kube_admin, ns, "web", replicas=1)
    op = start_operator("full")
    create_rem(kube_admin, ns, "scale-ok", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 3}}})
    obj = wait_phase(kube_admin, ns, "scale-ok", {"Succeeded", "Failed"}, timeout=90)
    assert obj["status"]["phase"] == "Succeeded", (obj["status"], (tmp_path / "operator-full.log").read_text()[-3000:])
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", ns).spec.replicas == 3
    log = (tmp_path / "operator-full.log").read_text()
    # With -A the operator also resumes objects left by earlier tests; kopf's Events into their
    # namespaces, still terminating, are refused with 403 "being terminated" - not an RBAC gap.
    # A bare "403" also matches a log timestamp's milliseconds (",403"); match the status instead.
    denied = [line for line in log.splitlines() if FORBIDDEN_IN_LOG.search(line)
              and "is being terminated" not in line]
    assert not denied, denied[:5]
    op.stop()

    # (b) actions.workload.enabled=false: no apps grants; the same Remediation fails Forbidden,
    # the deployment is untouched and the operator keeps running.
    role = apply_rbac_from_chart(cp, tools, helm_env, "actions.workload.enabled=false")
    assert not [t for t in rules_of(role) if t[0] == "apps"]
    wait_for(lambda: cp.kubectl("auth", "can-i", "patch", "deployments.apps", "-n", ns, kubeconfig=kubeconfig,
                                check=False).stdout.strip() == "no", what="RBAC change visible")
    op = start_operator("no-workload")
    create_rem(kube_admin, ns, "scale-denied", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 5}}})
    obj = wait_phase(kube_admin, ns, "scale-denied", {"Succeeded", "Failed"}, timeout=90)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    completed = condition(obj, "Completed")
    assert completed["reason"] == "Forbidden", completed
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", ns).spec.replicas == 3
    time.sleep(1)
    assert op.alive, (tmp_path / "operator-no-workload.log").read_text()[-3000:]
