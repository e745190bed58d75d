"""Params of the workload actions (runbooks 001, 003, 004): restart, scale, roll back, raise memory.

Targets are always in the Remediation's own namespace: a user who may create a Remediation in
namespace A can never make remedy touch namespace B.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .common import DNS_SUBDOMAIN, ApiModel, Duration, cel


class WorkloadRef(ApiModel):
    """A workload in the Remediation's namespace."""

    kind: Literal["Deployment", "StatefulSet", "DaemonSet"] = "Deployment"
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)


class ScalableRef(ApiModel):
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)


class DeploymentRef(ApiModel):
    kind: Literal["Deployment"] = "Deployment"
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)


class RestartWorkload(ApiModel):
    """Rolling restart (kubectl rollout restart), stamped with the Remediation's uid so a
    second stamp of the same value is a no-op."""

    target: WorkloadRef
    wait_for_rollout: Duration | None = Field(
        default=None,
        description="If set, verification waits up to this long for the new revision to be observed and rolled out.",
    )


class ScaleWorkload(ApiModel):
    """Set replicas (kubectl scale) to a number or by a delta, clamped to [minReplicas, maxReplicas]."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("has(self.replicas) != has(self.delta)", "scaleWorkload needs exactly one of replicas or delta"),
        ("self.minReplicas <= self.maxReplicas", "scaleWorkload.minReplicas exceeds maxReplicas"),
    ))

    target: ScalableRef
    replicas: int | None = Field(default=None, ge=0, le=10000, description="Absolute count (exclusive with delta).")
    delta: int | None = Field(default=None, ge=-10000, le=10000, description="Change relative to the current count.")
    min_replicas: int = Field(default=0, ge=0, le=10000, description="Lower bound the result is clamped to.")
    max_replicas: int = Field(default=50, ge=0, le=10000, description="Upper bound (blast-radius cap) the result is clamped to.")


class RollbackWorkload(ApiModel):
    """Roll a Deployment back to an earlier ReplicaSet revision (kubectl rollout undo)."""

    target: DeploymentRef
    to_revision: int | None = Field(default=None, ge=1, description="Revision to restore; default the previous one.")


QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"


class RaiseMemoryOnOOM(ApiModel):
    """Raise the memory limit of containers whose last termination was OOMKilled:
    new = max(old x factor, old + minStep), capped at maxLimit; requests kept <= limits."""

    target: WorkloadRef
    container: str | None = Field(default=None, description="Only this container; default every OOMKilled container.")
    factor: float = Field(default=1.2, ge=1.0, le=4.0, description="Multiplier on the old limit (>= 1); VPA's bump is 1.2.")
    min_step: str = Field(default="100Mi", pattern=QUANTITY, description="Minimum increase; VPA's bump is +100Mi.")
    max_limit: str = Field(pattern=QUANTITY, description="Required cap; at the cap the action is refused.")
    require_oom_killed: bool = Field(default=True, description="Refuse (Skipped) when no pod shows an OOMKilled termination.")
    strategy: Literal["rollout", "inPlace"] = Field(
        default="rollout",
        description="rollout patches the pod template; inPlace also resizes running pods through pods/resize (Kubernetes 1.33+).",
    )
