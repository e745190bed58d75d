"""Which Argo CD Application tracks an object, and will it put remedy's change back?

Why: remedy must never be silently undone. Argo CD marks what it manages with a tracking
annotation (``argocd.argoproj.io/tracking-id: <app>:<group>/<kind>:<ns>/<name>``, Argo CD
3.x's default) or label (``app.kubernetes.io/instance: <app>``). Reading that Application's
sync policy tells, before acting, whether the remedied field comes back:

- ``selfHeal``: automated sync with selfHeal and the field not ignored: reverted within
  seconds (certain);
- ``nextSync``: automated without selfHeal, or ignored without
  ``RespectIgnoreDifferences=true``: the next sync (any git change) puts Git's value back;
- ``manualSync``: no automated sync: the Application turns OutOfSync and a person's sync reverts;
- ``never``: the field is ignored (``managedFieldsManagers: [remedy]`` or a jsonPointer
  covering it) and syncs respect that (``RespectIgnoreDifferences=true``);
- ``unknown``: the Application cannot be read, or ignores by jqPathExpressions (not evaluated).

Pure functions over dicts, so the rules are unit-tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base.constants import FIELD_MANAGER

TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
TRACKING_LABEL = "app.kubernetes.io/instance"
APPS_GROUP, APPS_VERSION, APPS_PLURAL = "argoproj.io", "v1alpha1", "applications"
RESPECT_IGNORE = "RespectIgnoreDifferences=true"
# The JSON pointer of the field each workload action changes (what self-heal would restore).
REMEDIED_FIELD = {
    "scaleWorkload": "/spec/replicas",
    "raiseMemoryOnOOM": "/spec/template/spec/containers",
    "rollbackWorkload": "/spec/template",
    "restartWorkload": "/spec/template/metadata/annotations",
}


class AmbiguousTrackingError(ValueError):
    """Annotation and label name different Applications: one of them came from the manifest."""


def tracking(meta: dict[str, Any], apps_namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of the tracking Application, or None when not tracked.

    The annotation's app part is ``<name>`` or ``<namespace>_<name>`` (apps outside Argo CD's
    own namespace). When both annotation and label are present they must agree: Argo CD writes
    only the one its tracking method uses, so the other was written by whoever wrote the
    manifest and must not decide whose Application (and whose rights) this is."""
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    by_annotation = None
    raw = annotations.get(TRACKING_ANNOTATION)
    if raw:
        app = str(raw).split(":", 1)[0]
        ns, _, name = app.rpartition("_")
        by_annotation = (ns or apps_namespace, name) if name else None
    by_label = (apps_namespace, str(labels[TRACKING_LABEL])) if labels.get(TRACKING_LABEL) else None
    if by_annotation and by_label and by_annotation != by_label:
        raise AmbiguousTrackingError(
            f"tracking annotation names Application {'/'.join(by_annotation)} but the label "
            f"{TRACKING_LABEL} names {'/'.join(by_label)}")
    return by_annotation or by_label


def manages(app: dict[str, Any], group: str, kind: str, namespace: str, name: str) -> bool:
    """The Application's own status (written by Argo CD's controller) lists this object."""
    for res in (app.get("status") or {}).get("resources") or []:
        if (res.get("group") or "") == group and res.get("kind") == kind and res.get("name") == name \
                and (res.get("namespace") or "") == namespace:
            return True
    return False


@dataclass(frozen=True)
class Forecast:
    application: str  # "argocd/shop"
    reverts: str  # selfHeal | nextSync | manualSync | never | unknown
    message: str

    @property
    def certain(self) -> bool:
        return self.reverts == "selfHeal"


def _ignored(app_spec: dict[str, Any], group: str, kind: str, namespace: str, name: str,
             pointer: str) -> tuple[str, str]:
    """("yes"|"no"|"unknown", why) for the remedied field under the app's ignoreDifferences."""
    verdict, why = "no", "no ignoreDifferences entry covers it"
    for entry in app_spec.get("ignoreDifferences") or []:
        if (entry.get("group") or "") != group or entry.get("kind") != kind:
            continue
        if entry.get("name") and entry["name"] != name:
            continue
        if entry.get("namespace") and entry["namespace"] != namespace:
            continue
        if FIELD_MANAGER in (entry.get("managedFieldsManagers") or []):
            return "yes", f"ignoreDifferences.managedFieldsManagers lists {FIELD_MANAGER}"
        for p in entry.get("jsonPointers") or []:
            if pointer == p or pointer.startswith(p.rstrip("/") + "/"):
                return "yes", f"ignoreDifferences.jsonPointers has {p}"
        if entry.get("jqPathExpressions"):
            verdict, why = "unknown", "ignoreDifferences.jqPathExpressions are not evaluated by remedy"
    return verdict, why


def forecast(app: dict[str, Any], group: str, kind: str, namespace: str, name: str, action: str) -> Forecast:
    meta = app.get("metadata") or {}
    label = f"{meta.get('namespace')}/{meta.get('name')}"
    spec = app.get("spec") or {}
    pointer = REMEDIED_FIELD.get(action, "/spec")
    sync_policy = spec.get("syncPolicy") or {}
    automated = sync_policy.get("automated")
    enabled = automated is not None and automated.get("enabled", True) is not False
    self_heal = enabled and bool((automated or {}).get("selfHeal"))
    respect = RESPECT_IGNORE in (sync_policy.get("syncOptions") or [])
    ignored, why = _ignored(spec, group, kind, namespace, name, pointer)
    what = f"{kind}/{name} {pointer}"
    if ignored == "yes" and respect:
        return Forecast(label, "never", f"Argo CD Application {label} leaves {what} alone ({why}, {RESPECT_IGNORE})")
    if ignored == "unknown":
        return Forecast(label, "unknown", f"cannot tell whether Argo CD Application {label} reverts {what}: {why}")
    if ignored == "yes":
        return Forecast(label, "nextSync", f"Argo CD Application {label} ignores {what} ({why}) but its syncs do not "
                                           f"respect that without {RESPECT_IGNORE}: the next sync restores Git's value")
    if self_heal:
        return Forecast(label, "selfHeal", f"Argo CD Application {label} has automated sync with selfHeal and does not "
                                           f"ignore {what}: it will revert remedy's change within seconds")
    if enabled:
        return Forecast(label, "nextSync", f"Argo CD Application {label} syncs automatically (no selfHeal) and does not "
                                           f"ignore {what}: the next sync restores Git's value")
    return Forecast(label, "manualSync", f"Argo CD Application {label} will show {kind}/{name} OutOfSync; a manual "
                                         f"sync restores Git's value")


HOW_TO_KEEP = (f"to let remedy's change stand, add ignoreDifferences managedFieldsManagers: [{FIELD_MANAGER}] for "
               f"the workload and syncOptions {RESPECT_IGNORE} to the Application (docs/argocd.md)")
