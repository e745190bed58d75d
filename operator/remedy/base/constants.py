"""The names remedy shares with the API server, its users and its own tools, spelled once.

Group, version, kinds and plurals of the CRDs; the labels and annotations the operator,
the kubectl plugin and users read and write; the field managers; and the application name
that marks the operator's own database sessions (so terminate/kill actions never end the
session they run in). A unit test (tests/unit/test_constants.py) fails when the group
string or a label/annotation name is spelled anywhere else in operator/remedy.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "remedy.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

REMEDIATION_KIND: Final = "Remediation"
POLICY_KIND: Final = "RemediationPolicy"
REMEDIATIONS: Final = "remediations"
POLICIES: Final = "remediationpolicies"

# Labels on child Remediations (selectable: the policy machinery lists a policy's children by them).
LABEL_POLICY: Final = f"{GROUP}/policy"
LABEL_FIRING: Final = f"{GROUP}/firing"
LABEL_STEP: Final = f"{GROUP}/escalation-step"
LABEL_TARGET: Final = f"{GROUP}/target-hash"

# Annotations on child Remediations: where a firing came from.
ANN_FINGERPRINT: Final = f"{GROUP}/fingerprint"
ANN_STARTS_AT: Final = f"{GROUP}/starts-at"
ANN_LABELS: Final = f"{GROUP}/alert-labels"
ANN_TARGET: Final = f"{GROUP}/target"
# Written by people (or the kubectl plugin): approval of a Remediation, resume of a policy.
ANN_APPROVED_BY: Final = f"{GROUP}/approved-by"
ANN_RESUMED_AT: Final = f"{GROUP}/resumed-at"
# Written by the operator on a workload's pod template: which Remediation restarted it.
ANN_RESTARTED_BY: Final = f"{GROUP}/restarted-by"
# Test-only: with REMEDY_FAULT_INJECT set, objects carrying this annotation pause at hook points.
ANN_FAULT_INJECT: Final = f"{GROUP}/fault-inject"
# Written by the policy machinery on child Remediations (earned autonomy, issue 15): the mode the
# child was created in and since when; that its alert fired again after it succeeded
# (ineffective); that a shadow child's alert resolved without action.
ANN_MODE: Final = f"{GROUP}/mode"
ANN_MODE_SINCE: Final = f"{GROUP}/mode-since"
ANN_REFIRED_AT: Final = f"{GROUP}/refired-at"
ANN_CLEARED_AT: Final = f"{GROUP}/alert-cleared-at"
# On children of a policy with spec.silence: the rendered silence to create while the child
# runs, and the Alertmanager silence id once created.
ANN_SILENCE: Final = f"{GROUP}/silence"
ANN_SILENCE_ID: Final = f"{GROUP}/silence-id"
# Episodes (issue 12): a firing after a seen resolve is a new episode even when the sender keeps
# startsAt. The child of episode n > 0 carries its number; a child whose alert resolved is
# stamped, so the next firing of the same (fingerprint, startsAt) creates the next episode.
ANN_EPISODE: Final = f"{GROUP}/episode"
ANN_RESOLVED_AT: Final = f"{GROUP}/alert-resolved-at"

# Stamped by the admission policies (deploy/admission) as the API server authenticated the
# requester / approver; the lifecycle checks the requester's rights with a SubjectAccessReview.
ANN_REQUESTED_BY: Final = f"{GROUP}/requested-by"
ANN_REQUESTED_BY_GROUPS: Final = f"{GROUP}/requested-by-groups"
ANN_APPROVED_BY_GROUPS: Final = f"{GROUP}/approved-by-groups"

# On a shard's coordination.k8s.io Lease (runtime/shards.py): the replica that prefers this shard
# and asks its holder to hand it back; the holder's webhook address, for forwarded alerts.
ANN_SHARD_WANTED_BY: Final = f"{GROUP}/shard-wanted-by"
ANN_SHARD_WEBHOOK: Final = f"{GROUP}/shard-webhook"
# Header on an alert group one replica forwards to the shard owner: the namespaces it asks the
# owner to handle (the owner does not forward again).
HEADER_FORWARDED_FOR: Final = "X-Remedy-Forwarded-For"
SHARD_LEASE_PREFIX: Final = "remedy-shard-"

# kopf keeps its progress and diff-base bookkeeping under this annotation prefix.
KOPF_ANNOTATION_PREFIX: Final = f"kopf.{GROUP}"

FIELD_MANAGER: Final = "remedy"
KUBECTL_FIELD_MANAGER: Final = "kubectl-remedy"
EVENT_REPORTING_COMPONENT: Final = f"{GROUP}/operator"

# application_name (PostgreSQL) / appname (MongoDB) of every session the operator opens;
# the terminate/kill actions exclude sessions carrying it.
OPERATOR_APP_NAME: Final = "remedy-operator"

LABEL_NAMES: Final = (LABEL_POLICY, LABEL_FIRING, LABEL_STEP, LABEL_TARGET)
ANNOTATION_NAMES: Final = (
    ANN_FINGERPRINT, ANN_STARTS_AT, ANN_LABELS, ANN_TARGET, ANN_APPROVED_BY, ANN_RESUMED_AT,
    ANN_RESTARTED_BY, ANN_FAULT_INJECT, ANN_MODE, ANN_MODE_SINCE, ANN_REFIRED_AT, ANN_CLEARED_AT,
    ANN_SILENCE, ANN_SILENCE_ID,
    ANN_EPISODE, ANN_RESOLVED_AT, ANN_SHARD_WANTED_BY, ANN_SHARD_WEBHOOK,
)
# The remedy.dev/ annotations people write (through admission or kubectl remedy). Every other
# remedy.dev/ label or annotation on a Remediation or RemediationPolicy is the operator's: the
# validating admission policy (deploy/admission/validating, variable peopleKeys) refuses them
# from anyone but the operator's ServiceAccount (or system:masters).
PEOPLE_ANNOTATIONS: Final = (
    ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS, ANN_APPROVED_BY, ANN_APPROVED_BY_GROUPS, ANN_RESUMED_AT,
)

# Phases of a Remediation, as sets (each spelled once): a final one never runs again; a not
# started one may still be cancelled by a resolve, and approval and the requester review come first.
FINAL_PHASES: Final[frozenset[str]] = frozenset({"Succeeded", "Failed", "Skipped"})
NOT_STARTED_PHASES: Final[frozenset[str]] = frozenset({"Pending", "AwaitingApproval"})
