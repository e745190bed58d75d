"""The pydantic models of remedy's CRDs: the only hand-written schema (crds/ is generated).

This package imports nothing of remedy's but the base: it sits at the bottom of the layers above it.
"""

from ..base.constants import FINAL_PHASES
from .common import ApiModel, Condition, SecretKeyRef, parse_duration
from .policy import RemediationPolicy, RemediationPolicySpec, RemediationPolicyStatus
from .remediation import (
    CONDITION_TYPES,
    ActionSpec,
    Remediation,
    RemediationSpec,
    RemediationStatus,
    action_member_names,
)

__all__ = [
    "CONDITION_TYPES",
    "FINAL_PHASES",
    "ActionSpec",
    "ApiModel",
    "Condition",
    "Remediation",
    "RemediationPolicy",
    "RemediationPolicySpec",
    "RemediationPolicyStatus",
    "RemediationSpec",
    "RemediationStatus",
    "SecretKeyRef",
    "action_member_names",
    "parse_duration",
]
