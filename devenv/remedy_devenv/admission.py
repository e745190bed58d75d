"""Install remedy's admission policies (deploy/admission) and wait until they are in force.

Why: the operator runs a Remediation only with the rights of the user the API server recorded
on it (remedy.dev/requested-by, stamped by a MutatingAdmissionPolicy). The API server loads
new policies asynchronously, so objects created right after `kubectl apply` could slip in
unstamped and would then fail RequesterUnknown. This waits until a server-side dry run shows
the stamp, and until a forged value is refused.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from .cluster import REPO, ClusterError, ControlPlane

POLICIES = REPO / "deploy" / "admission" / "policies.yaml"


def _probe(cp: ControlPlane, namespace: str, annotations: dict[str, str]) -> tuple[bool, dict[str, str], str]:
    body = {"apiVersion": "remedy.dev/v1alpha1", "kind": "Remediation",
            "metadata": {"name": f"admission-probe-{uuid.uuid4().hex[:8]}", "namespace": namespace,
                         "annotations": annotations},
            "spec": {"action": {"notify": {"message": "probe"}}}}
    res = cp.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(body), check=False)
    if res.returncode != 0:
        return False, {}, res.stderr
    return True, json.loads(res.stdout)["metadata"].get("annotations") or {}, ""


def install(cp: ControlPlane, path: Path = POLICIES, timeout: float = 60.0, namespace: str = "default") -> None:
    cp.kubectl("apply", "-f", str(path))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, ann, err = _probe(cp, namespace, {})
        stamped = ok and ann.get("remedy.dev/requested-by") == "admin"
        forged_ok, _, _ = _probe(cp, namespace, {"remedy.dev/approved-by": "someone-else"})
        if stamped and not forged_ok:
            return
        last = err or f"annotations {ann}, forged approval admitted: {forged_ok}"
        time.sleep(0.3)
    raise ClusterError(f"remedy admission policies not in force after {timeout}s: {last}")
