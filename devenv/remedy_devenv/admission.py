"""Install remedy's admission policies (deploy/admission) and wait until they are in force.

Why: the operator runs a Remediation only with the rights of the user the API server recorded
on it (remedy.dev/requested-by). The API server loads new policies asynchronously, so objects
created right after `kubectl apply` could slip in unchecked (or unstamped, and then fail
RequesterUnknown). This waits until server-side dry runs show the policies at work.

Two modes, as shipped: ``mutating`` (deploy/admission/validating + mutating: the
MutatingAdmissionPolicy stamps the requester) and ``validating`` (deploy/admission/validating
alone, for a control plane without MutatingAdmissionPolicy: clients write the requester, e.g.
`kubectl remedy apply`, and the ValidatingAdmissionPolicies check it).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Literal

from .cluster import REPO, ClusterError, ControlPlane

ADMISSION = REPO / "deploy" / "admission"
VALIDATING = ADMISSION / "validating" / "policies.yaml"
MUTATING = ADMISSION / "mutating" / "policies.yaml"
Mode = Literal["mutating", "validating"]
# admin's identity as the static token file gives it (remedy_devenv.cluster).
ADMIN = {"remedy.dev/requested-by": "admin", "remedy.dev/requested-by-groups": "system:masters,system:authenticated"}


def _probe(cp: ControlPlane, namespace: str, annotations: dict[str, str]) -> tuple[bool, dict[str, str], str]:
    body = {"apiVersion": "remedy.dev/v1alpha1", "kind": "Remediation",
            "metadata": {"name": f"admission-probe-{uuid.uuid4().hex[:8]}", "namespace": namespace,
                         "annotations": annotations},
            "spec": {"action": {"notify": {"message": "probe"}}}}
    res = cp.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(body), check=False)
    if res.returncode != 0:
        return False, {}, res.stderr
    return True, json.loads(res.stdout)["metadata"].get("annotations") or {}, ""


def install(cp: ControlPlane, path: Path | None = None, timeout: float = 60.0, namespace: str = "default",
            mode: Mode = "mutating") -> None:
    for part in ([path] if path else [VALIDATING] + ([MUTATING] if mode == "mutating" else [])):
        cp.kubectl("apply", "-f", str(part))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        # mutating: an unannotated object gets admin's stamp. validating: it is refused, and one
        # carrying admin's own identity is admitted.
        ok, ann, err = _probe(cp, namespace, {} if mode == "mutating" else dict(ADMIN))
        stamped = ok and ann.get("remedy.dev/requested-by") == "admin"
        if mode == "validating":
            stamped = stamped and not _probe(cp, namespace, {})[0]
        forged_ok, _, _ = _probe(cp, namespace, {"remedy.dev/approved-by": "someone-else"})
        if stamped and not forged_ok:
            return
        last = err or f"annotations {ann}, forged approval admitted: {forged_ok}"
        time.sleep(0.3)
    raise ClusterError(f"remedy admission policies not in force after {timeout}s: {last}")


def uninstall(cp: ControlPlane, timeout: float = 60.0, namespace: str = "default") -> None:
    """Delete every remedy admission policy and wait until a forged approver is admitted again."""
    for part in (MUTATING, VALIDATING):
        cp.kubectl("delete", "--ignore-not-found", "-f", str(part), check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _probe(cp, namespace, {"remedy.dev/approved-by": "someone-else", **ADMIN})[0]:
            return
        time.sleep(0.3)
    raise ClusterError(f"remedy admission policies still in force {timeout}s after deleting them")
