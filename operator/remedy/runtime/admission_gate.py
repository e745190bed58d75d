"""Act only while remedy's identity checks are in force (clients/admission_probe.py says when).

Why: every input the engine trusts about *who* asked and *who* approved was stamped or checked
at admission. Where the ValidatingAdmissionPolicies are missing, a requester annotation is
just text anyone could write, and so are remedy's own labels on a "child". The operator then
refuses to act rather than trust it:

- ``GatedLifecycle`` wraps the Remediation lifecycle: a non-final Remediation is held (not failed:
  nothing is wrong with it) with the condition ``AdmissionChecks=False`` (reason
  ``AdmissionNotInForce``), one Warning Event and a log line, and retried every few seconds;
  ``remedy_admission_held_total`` counts the refusals. Once the probe sees the checks again it
  proceeds, and the condition turns True; but a Remediation created, or whose spec or remedy's
  labels and annotations were written, while the checks may have been missing (from the last
  probe that saw them to the first that sees them again: managedFields times) ends Failed,
  reason ``AdmissionNotInForce``: what it claims was never checked.
- ``GatedSilences`` creates no Alertmanager silence from a child's annotation meanwhile (the
  periodic sweep still expires remedy's silences).

Both are wrappers around the real objects so the wiring changes in one line each.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from prometheus_client import Counter

from ..api.common import now_rfc3339_ms
from ..base.constants import FINAL_PHASES, REMEDIATIONS
from ..base.errors import RetryableError
from ..base.observability import REGISTRY
from ..clients.admission_probe import AdmissionProbe, written_in
from ..lifecycle.conditions import get_condition, set_condition

log = logging.getLogger("remedy.admission")

CONDITION = "AdmissionChecks"
REASON = "AdmissionNotInForce"
HELD = Counter("remedy_admission_held_total",
               "Remediation passes refused because remedy's admission checks were not in force.", registry=REGISTRY)


class GatedLifecycle:
    """The lifecycle, behind the admission probe's verdict. Everything else is the lifecycle's."""

    def __init__(self, lifecycle: Any, probe: AdmissionProbe, kube: Any, recorder: Any) -> None:
        self.lifecycle, self.probe, self.kube, self.recorder = lifecycle, probe, kube, recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lifecycle, name)

    async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> str | None:
        if await self.probe.in_force():
            if self.probe.ever_failed and await self._lift(namespace, name):
                return "Failed"
            result: str | None = await self.lifecycle.reconcile(namespace, name, body)
            return result
        return await self._hold(namespace, name)

    async def _hold(self, namespace: str, name: str) -> str | None:
        obj = await self.kube.get_object(REMEDIATIONS, namespace, name)
        if obj is None:
            return None
        status = obj.get("status") or {}
        if status.get("phase") in FINAL_PHASES:
            return str(status["phase"])
        HELD.inc()
        message = (f"remedy's admission checks are not in force, so the recorded requester and approvals cannot be "
                   f"trusted and nothing runs: {self.probe.reason}. Install the ValidatingAdmissionPolicies "
                   f"(deploy/admission/validating or the Helm chart's); this Remediation continues once they are in force")
        current = get_condition(list(status.get("conditions") or []), CONDITION)
        if current is None or current.get("status") != "False":
            await self._set(obj, "False", REASON, message)
            self.recorder.event(obj, "Warning", REASON, message)
            log.warning("%s: %s", REASON, message, extra={"remediation": f"{namespace}/{name}"})
        raise RetryableError(f"{namespace}/{name} held: admission checks not in force", delay=self.probe.retry_interval,
                             reason=REASON)

    async def _lift(self, namespace: str, name: str) -> bool:
        """After an outage: refuse (True) what was written while the checks may have been
        missing; otherwise turn the condition back to True."""
        obj = await self.kube.get_object(REMEDIATIONS, namespace, name)
        if obj is None or (obj.get("status") or {}).get("phase") in FINAL_PHASES:
            return False
        since = written_in(obj, self.probe.windows)
        if since is not None:
            await self._refuse(obj, since)
            return True
        current = get_condition(list((obj.get("status") or {}).get("conditions") or []), CONDITION)
        if current is not None and current.get("status") == "False":
            await self._set(obj, "True", "AdmissionInForce", self.probe.reason)
        return False

    async def _refuse(self, obj: dict[str, Any], since: float) -> None:
        meta = obj["metadata"]
        when = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = (f"created or changed while remedy's admission checks were not in force (since {when}): its "
                   "requester, approvals and labels were never checked, so it is not run; create a new Remediation")
        conds = set_condition(list((obj.get("status") or {}).get("conditions") or []), CONDITION, "False",
                              "WrittenWhileNotInForce", message, meta.get("generation"))
        conds = set_condition(conds, "Completed", "True", REASON, message, meta.get("generation"))
        await self.kube.patch_status(REMEDIATIONS, meta["namespace"], meta["name"], {
            "phase": "Failed", "message": message, "completedAt": now_rfc3339_ms(), "conditions": conds,
            "observedGeneration": meta.get("generation")}, meta.get("resourceVersion"))
        self.recorder.event(obj, "Warning", REASON, f"Failed: {message}")
        log.warning("%s: %s", REASON, message, extra={"remediation": f"{meta['namespace']}/{meta['name']}"})

    async def _set(self, obj: dict[str, Any], status: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        conds = set_condition(list((obj.get("status") or {}).get("conditions") or []), CONDITION, status, reason,
                              message, meta.get("generation"))
        try:  # optimistic lock: never overwrite conditions someone wrote since we read them
            await self.kube.patch_status(REMEDIATIONS, meta["namespace"], meta["name"], {"conditions": conds},
                                         meta.get("resourceVersion"))
        except RetryableError:
            pass  # changed meanwhile: the next pass writes it


class GatedSilences:
    """The silence keeper, creating nothing while the checks are not in force."""

    def __init__(self, keeper: Any, probe: AdmissionProbe) -> None:
        self.keeper, self.probe = keeper, probe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.keeper, name)

    async def on_child(self, body: dict[str, Any], event_type: str | None = None) -> None:
        if await self.probe.in_force():
            await self.keeper.on_child(body, event_type)
