"""Count the operator's writes from the kube-apiserver's own audit log.

Why this exists: "applied exactly once" must be proven by a witness the operator does not
control. The test control plane (remedy_devenv.cluster) runs the apiserver with an audit
policy that records, at Metadata level, every create/update/patch/delete on the workload
resources remedy acts on. A repeated restart stamps the same annotation and a repeated scale
sets the same count, so `metadata.generation` cannot see those duplicates; the audit log can:
every request that reached the apiserver is one line.

Each line is one audit.k8s.io/v1 Event (stage ResponseComplete). A write is *effective* when
the apiserver answered it with a 2xx code (a 409 precondition failure or a 422 changed nothing),
whatever the client saw: a response dropped by a proxy after forwarding still counts. A write
logged with a 5xx is *ambiguous*: when the client dies mid-request the apiserver logs 504 (its
handler timed out on the gone client) although storage may have committed the change, as seen
in the crash test. Count those as "reached the apiserver", never as "did nothing".
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})


@dataclasses.dataclass(frozen=True)
class AuditWrite:
    """One mutating request as the apiserver recorded it."""

    user: str
    verb: str
    resource: str  # "deployments", "deployments/scale", "pods/resize", ...
    namespace: str
    name: str
    code: int
    audit_id: str
    timestamp: str

    @property
    def effective(self) -> bool:
        return 200 <= self.code < 300

    @property
    def ambiguous(self) -> bool:
        """5xx (or no code): may or may not have been applied."""
        return self.code >= 500 or self.code == 0

    @property
    def target(self) -> tuple[str, str, str]:
        """(namespace, resource incl. subresource, name): the unit duplicates are counted in."""
        return self.namespace, self.resource, self.name


def _parse(line: str) -> AuditWrite | None:
    try:
        ev: dict[str, Any] = json.loads(line)
    except ValueError:  # a line being written while we read
        return None
    if ev.get("stage") != "ResponseComplete" or ev.get("verb") not in WRITE_VERBS:
        return None
    ref = ev.get("objectRef") or {}
    resource = str(ref.get("resource") or "")
    if ref.get("subresource"):
        resource += "/" + str(ref["subresource"])
    return AuditWrite(
        user=str((ev.get("user") or {}).get("username") or ""), verb=str(ev["verb"]), resource=resource,
        namespace=str(ref.get("namespace") or ""), name=str(ref.get("name") or ""),
        code=int((ev.get("responseStatus") or {}).get("code") or 0), audit_id=str(ev.get("auditID") or ""),
        timestamp=str(ev.get("stageTimestamp") or ""),
    )


def read_writes(audit_log: Path) -> Iterator[AuditWrite]:
    """Every mutating request recorded so far (rotated files are not followed: tests stay small)."""
    if not audit_log.exists():
        return
    with audit_log.open(errors="replace") as f:
        for line in f:
            if line.endswith("\n"):
                w = _parse(line)
                if w is not None:
                    yield w


class AuditCounter:
    """Counts writes by one user in one namespace from the apiserver's audit log."""

    def __init__(self, audit_log: Path, user: str, namespace: str | None = None) -> None:
        self.audit_log = Path(audit_log)
        self.user = user
        self.namespace = namespace

    def writes(self, resource: str | None = None, name: str | None = None,
               effective_only: bool = False) -> list[AuditWrite]:
        out = []
        for w in read_writes(self.audit_log):
            if w.user != self.user or (self.namespace is not None and w.namespace != self.namespace):
                continue
            if resource is not None and w.resource != resource:
                continue
            if name is not None and w.name != name:
                continue
            if effective_only and not w.effective:
                continue
            out.append(w)
        return out

    def effective_by_target(self) -> Counter[tuple[str, str, str]]:
        """Effective (2xx) writes per (namespace, resource/subresource, name)."""
        return Counter(w.target for w in self.writes(effective_only=True))

    def count(self, resource: str, name: str, effective_only: bool = True) -> int:
        return len(self.writes(resource, name, effective_only))

    def settle(self, quiet_seconds: float = 1.0, timeout: float = 15.0) -> None:
        """Wait until the log stopped growing for `quiet_seconds` (in-flight writes are logged)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.audit_log.stat().st_size if self.audit_log.exists() else 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet_seconds:
                return
            time.sleep(0.1)


def duplicates(counts: Counter[tuple[str, str, str]]) -> dict[str, int]:
    """Targets written more than once: {"ns/resource/name": count}."""
    return {"/".join(t): n for t, n in counts.items() if n > 1}
