"""Is remedy's identity checking in force on this API server? Asked with a server-side dry run.

Why: the operator acts only with the rights of the requester the API server recorded, and only
on approvals the API server checked (docs/security.md). Those records are trustworthy only
while remedy's ValidatingAdmissionPolicies are installed, bound with Deny and loaded. Someone
may never have installed them, may have deleted them, or the API server may not have loaded
them yet; then anyone who may create a Remediation can claim to be anyone. Nothing in a
Remediation tells the operator which case it is in, so it asks the API server directly:

    create a Remediation with dryRun=All carrying a forged requester and a forged approver

The checks are in force exactly when that is refused (403) by a ValidatingAdmissionPolicy
naming one of remedy's identity annotations. A dry run persists nothing and runs every
admission stage. Any other answer (admitted, refused by RBAC, namespace missing) counts as not
in force: the operator fails closed (remedy.admission_gate holds every Remediation). No answer
at all (API server down or overloaded) keeps the last verdict: nothing passes admission then.

The probe runs at start, then every ``interval`` seconds while the checks are in force and
every ``retry_interval`` while they are not, so a fresh install starts acting within seconds
of the policies loading.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge

from ..base import rfc3339
from ..base.constants import (
    ANN_APPROVED_BY,
    ANN_REQUESTED_BY,
    ANN_REQUESTED_BY_GROUPS,
    API_VERSION,
    GROUP,
    REMEDIATION_KIND,
    REMEDIATIONS,
    VERSION,
)
from ..base.observability import REGISTRY

log = logging.getLogger("remedy.admission")

IN_FORCE = Gauge("remedy_admission_checks_in_force",
                 "1 when the last admission probe saw remedy's identity checks in force; 0 when not (nothing runs).",
                 registry=REGISTRY)
PROBES = Counter("remedy_admission_probes_total", "Admission probes by result (in_force, not_in_force, unknown).",
                 ["result"], registry=REGISTRY)
# Names no person can have: the API server never authenticates a user as system:remedy:*.
FORGED_REQUESTER = "system:remedy:forged-requester-probe"
FORGED_APPROVER = "system:remedy:forged-approver-probe"


def probe_body(namespace: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": REMEDIATION_KIND,
            "metadata": {"generateName": "remedy-admission-probe-", "namespace": namespace,
                         "annotations": {ANN_REQUESTED_BY: FORGED_REQUESTER, ANN_REQUESTED_BY_GROUPS: "",
                                         ANN_APPROVED_BY: FORGED_APPROVER}},
            "spec": {"action": {"notify": {"message": "remedy admission probe (dry run, never stored)"}}}}


def verdict(status: int | None, body: str) -> tuple[bool | None, str]:
    """(in force, why) from the API server's answer to the probe (status None: admitted).
    In force None: the API server could not answer (429/5xx), which says nothing either way."""
    if status is None:
        return False, ("a dry-run Remediation carrying a forged requester and approver was admitted: "
                       "remedy's ValidatingAdmissionPolicies are not installed, not bound with Deny, or not loaded yet")
    try:
        message = str(json.loads(body).get("message") or body)
    except (ValueError, AttributeError):
        message = body
    message = message[:300]
    if status == 403 and "ValidatingAdmissionPolicy" in message and (
            ANN_REQUESTED_BY in message or ANN_APPROVED_BY in message):
        return True, "a forged requester and approver are refused by the API server"
    if status == 403 and "not yet ready to handle request" in message:
        # An API server that has not loaded its admission policies yet (just restarted) refuses
        # every request it would check: nothing gets past it, and it says nothing about ours.
        return None, f"the API server is not ready to check admission yet: {message}"
    if status == 403:
        return False, f"the probe was refused, but not by remedy's admission policy (RBAC?): {message}"
    if status == 429 or status >= 500:
        return None, f"the API server could not answer the probe ({status}): {message}"
    return False, f"the probe got {status} from the API server: {message}"


@dataclass
class AdmissionProbe:
    """The probe and its last verdict. ``enabled`` False (REMEDY_ADMISSION_PROBE=false): always in force."""

    api_client: k8s.ApiClient
    namespace: str
    enabled: bool = True
    interval: float = 60.0
    retry_interval: float = 5.0
    timeout: float = 10.0
    in_force_now: bool | None = None  # None: not asked yet
    reason: str = "not probed yet"
    ever_failed: bool = False
    checked_at: float = 0.0
    # Wall-clock spans (start, end; end None: still open) in which the checks may have been
    # missing: from the last probe that saw them (or this process's start) to the first that
    # sees them again. Whatever was written then carries identities nobody checked.
    windows: list[tuple[float, float | None]] = field(default_factory=list)
    started_wall: float = field(default_factory=time.time)
    last_ok_wall: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def probe_once(self) -> tuple[bool | None, str]:
        custom = k8s.CustomObjectsApi(self.api_client)
        try:
            await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                    REMEDIATIONS, probe_body(self.namespace), dry_run="All",
                                    _request_timeout=self.timeout)
            return verdict(None, "")
        except ApiException as exc:
            return verdict(exc.status, str(exc.body or exc.reason))
        except (OSError, TimeoutError, urllib3.exceptions.HTTPError) as exc:
            return None, f"the API server did not answer the probe: {type(exc).__name__}"

    async def check(self) -> bool:
        """Probe now and record the verdict (logged and counted when it changes). An API server
        that does not answer (down, overloaded) changes nothing: while it is down nobody can
        write anything past admission either; before any answer, nothing runs."""
        async with self._lock:
            ok, why = await self.probe_once()
            if ok is None:
                PROBES.labels(result="unknown").inc()
                if self.in_force_now is None:
                    self.in_force_now, self.reason, self.ever_failed = False, why, True
                    IN_FORCE.set(0)
                return bool(self.in_force_now)
            changed = ok != self.in_force_now
            now = time.time()
            window_open = bool(self.windows) and self.windows[-1][1] is None
            if not ok and not window_open:
                self.windows.append((self.last_ok_wall or self.started_wall, None))
            if ok and window_open:
                self.windows[-1] = (self.windows[-1][0], now)
            if ok:
                self.last_ok_wall = now
            self.in_force_now, self.reason, self.checked_at = ok, why, time.monotonic()
            self.ever_failed = self.ever_failed or not ok
            IN_FORCE.set(1 if ok else 0)
            PROBES.labels(result="in_force" if ok else "not_in_force").inc()
            if changed:
                if ok:
                    log.info("admission checks in force (namespace %s): %s", self.namespace, why)
                else:
                    log.error("admission checks NOT in force (namespace %s): %s; remedy runs nothing until they are",
                              self.namespace, why)
            return ok

    async def in_force(self) -> bool:
        if not self.enabled:
            return True
        if self.in_force_now is None:
            return await self.check()
        return self.in_force_now

    async def run(self) -> None:
        """Probe forever: every ``interval`` while in force, every ``retry_interval`` while not."""
        if not self.enabled:
            IN_FORCE.set(1)
            return
        while True:
            try:
                ok = await self.check()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                log.warning("admission probe failed: %s", exc)
                ok = False
            await asyncio.sleep(self.interval if ok else self.retry_interval)


def _touches_trusted_fields(fields: dict[str, Any]) -> bool:
    """A managedFields entry owning spec, one of remedy's labels or annotations (identity included)."""
    meta = fields.get("f:metadata") or {}
    keys = list(meta.get("f:annotations") or {}) + list(meta.get("f:labels") or {})
    return "f:spec" in fields or any(k.startswith(f"f:{GROUP}/") for k in keys)


def written_in(obj: dict[str, Any], windows: list[tuple[float, float | None]]) -> float | None:
    """The start of the first window in which ``obj`` was created, or its spec or remedy's
    labels/annotations were last written (managedFields time, seconds resolution), else None."""
    meta = obj.get("metadata") or {}
    times = [rfc3339.epoch(meta.get("creationTimestamp"))]
    times += [rfc3339.epoch(m.get("time")) for m in meta.get("managedFields") or []
              if m.get("subresource") != "status" and _touches_trusted_fields(m.get("fieldsV1") or {})]
    for start, end in windows:
        # managedFields times are whole seconds: a write in the window's first second counts.
        if any(t is not None and int(start) <= t and (end is None or t <= end) for t in times):
            return start
    return None


def probe_namespace(configured: str | None, operator_namespace: str | None, watched: list[str] | None) -> str:
    """Where to send the dry run: configured, else the first watched namespace that is a plain
    name (the operator may create Remediations there in namespaced mode), else its own, else default."""
    if configured:
        return configured
    plain = [ns for ns in watched or [] if not any(ch in ns for ch in "*?!,")]
    return plain[0] if plain else operator_namespace or "default"
