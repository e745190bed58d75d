"""A Remediation committed to git runs once, even when Argo CD deletes and re-creates it.

Why: a finished Remediation is never run again (lifecycle/lifecycle.py), but that record lives
in the object's status. Argo CD can make a *new* object with the same name and spec: prune
(removed from git, then committed again), ``Replace=true`` falling back to delete and
create, or a person deleting it for Argo CD to re-create. For the engine that is a fresh
Remediation, and a one-shot action in git would run twice.

So before acting on a Remediation that Argo CD tracks (tracking annotation or label), the
engine claims a run-once record: a ConfigMap named from a digest of namespace, name and spec,
created atomically (AlreadyExists is the answer "already ran"). A re-created object with the
same name and spec finds the claim of an earlier uid and ends Skipped/AlreadyRan without
acting; changing the spec (e.g. ``spec.reason``) or the name is how to run it again. Dry
runs claim nothing (they change nothing). The record holds no secret: names, uid, digest.

Where: the operator's namespace when set (REMEDY_NAMESPACE, so the right to create
ConfigMaps is confined there), else the Remediation's namespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api.common import now_rfc3339_ms
from ..base.constants import GROUP
from ..base.errors import SkipError
from ..clients.kube import translate
from .gitops_apps import TRACKING_ANNOTATION, TRACKING_LABEL

REASON = "AlreadyRan"
LEDGER_LABEL = f"{GROUP}/run-once"


def tracked_by_argo(obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    if any(r.get("controller") for r in meta.get("ownerReferences") or []):
        return False  # a policy's child: created by the operator, never by Argo CD
    return bool((meta.get("annotations") or {}).get(TRACKING_ANNOTATION)
                or (meta.get("labels") or {}).get(TRACKING_LABEL))


def digest(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    text = json.dumps([meta["namespace"], meta["name"], obj.get("spec") or {}], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def record_name(obj: dict[str, Any]) -> str:
    return f"remedy-once-{digest(obj)[:40]}"


async def claim(kube: Any, obj: dict[str, Any], ledger_namespace: str | None) -> None:
    """Return when this object may act; raise SkipError(AlreadyRan) when an earlier object with
    the same namespace, name and spec already claimed the run."""
    if not tracked_by_argo(obj):
        return
    meta = obj["metadata"]
    ns = ledger_namespace or meta["namespace"]
    name = record_name(obj)
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {LEDGER_LABEL: "true"}},
            "data": {"remediation": f"{meta['namespace']}/{meta['name']}", "uid": meta["uid"],
                     "specDigest": digest(obj), "claimedAt": now_rfc3339_ms()}}
    try:
        await asyncio.to_thread(kube.core.create_namespaced_config_map, ns, body,
                                _request_timeout=kube.request_timeout)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise translate(exc, f"create run-once record ConfigMap {ns}/{name}") from None
    try:
        existing = await asyncio.to_thread(kube.core.read_namespaced_config_map, name, ns,
                                           _request_timeout=kube.request_timeout)
    except ApiException as exc:
        raise translate(exc, f"read run-once record ConfigMap {ns}/{name}") from None
    data = existing.data or {}
    if data.get("uid") == meta["uid"]:
        return  # our own claim (this operator died after claiming, before acting)
    raise SkipError(
        f"this Remediation (same name and spec) already ran as uid {data.get('uid')} (claimed {data.get('claimedAt')}); "
        f"Argo CD re-created it, which never runs it again: to run it again, change its spec (e.g. spec.reason) "
        f"or name in git", reason=REASON)
