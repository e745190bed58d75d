"""What a trigger hands to the policy machinery: one firing of an alert or a PromQL series.

Why a module: the triggers (Alertmanager webhook, Prometheus poller) and the machinery both
need the shape of a firing and the names derived from it, and nothing else of each other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

# Degraded reasons written by the Prometheus trigger (triggers/prometheus.py), cleared by it.
TRIGGER_DEGRADED_REASONS = frozenset({"NoPrometheus", "PrometheusUnavailable", "InvalidPromQL"})


@dataclass(frozen=True)
class Firing:
    fingerprint: str
    starts_at: str
    labels: dict[str, str]
    annotations: dict[str, str]
    source: str = "alertmanager"


def child_name(policy_name: str, policy_uid: str, fingerprint: str, starts_at: str, step: int = 0, episode: int = 0) -> str:
    seed = f"{policy_uid}|{fingerprint}|{starts_at}" + (f"|{episode}" if episode else "")
    digest = hashlib.sha256(seed.encode()).hexdigest()[:12]
    base = f"{policy_name[:40].rstrip('-.')}-{digest}"
    return base if step == 0 else f"{base}-e{step}"


def series_fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]



def variables(firing: Firing, policy_name: str) -> dict[str, Any]:
    """The names a policy's templates may use for this firing."""
    return {"labels": firing.labels, "annotations": firing.annotations, "fingerprint": firing.fingerprint,
            "startsAt": firing.starts_at, "policy": policy_name}
