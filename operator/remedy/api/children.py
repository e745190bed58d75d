"""Which Remediations are a policy's children: only those the operator created for it.

Why (issue 20): the policy engine used to count as a child every Remediation carrying the
policy label (``LABEL_POLICY``). Labels are written by whoever creates the object, so a user
holding only ``remedy:requester`` could copy an admin policy's labels (``policy``,
``firing``, ``escalation-step``) onto her own Remediation: its failure then counted in the
admin policy's track record and failure streak (self-pause, demotion), and the escalation
step created the next child, requested by the admin, with the admin's rights. The same
object's silence annotation (``ANN_SILENCE``) made the operator create an Alertmanager silence
with matchers the user chose.

A child counts only when both hold:

1. a *controller* ownerReference names the policy's kind, name and **uid** (the uid of this
   policy incarnation; a policy deleted and recreated does not inherit children), and
2. the operator's stamp: the requester annotations the API server recorded
   (``requested-by`` and ``requested-by-groups``) equal the policy's own recorded author.
   The admission policies (deploy/admission, charts/remedy admission.yaml) stamp every object
   with its creator's identity; only the operator's ServiceAccount may create an object naming
   someone else, and only with a policy controller reference, which is how a real child
   carries its policy's author. Admission also refuses remedy's labels and annotations from
   anyone but the operator; this check is the engine's own defence behind it: an object
   carrying them with any other requester than the author changes no policy state.

Here in ``api`` (pure functions of two object bodies) so the policy machinery, the history
collector and ``kubectl remedy history`` apply the same rule.

Not chosen as the stamp: ``managedFields[].manager == "remedy"`` (the field manager is a
client-chosen string: ``kubectl create --field-manager=remedy`` forges it) and the labels or
annotations themselves. Residual: the policy's author herself (and cluster admins, who can
do anything) can create objects that count as children of her own policy; she can already
edit that policy. Where the admission policies are not in force nothing stamps identities;
the operator's admission self-check then refuses to act (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from ..base.constants import ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS, POLICY_KIND


def _requester(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """The requester annotations as the API server stamped them (user, comma-joined groups)."""
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    return ann.get(ANN_REQUESTED_BY) or None, ann.get(ANN_REQUESTED_BY_GROUPS) or None


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The controller ownerReference that names a RemediationPolicy, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == POLICY_KIND and ref.get("controller"):
            return dict(ref)
    return None


def is_child_of(child: dict[str, Any], policy: dict[str, Any]) -> bool:
    """True only for a Remediation the operator created for this policy (module docstring)."""
    ref = controller_of(child)
    pmeta = policy.get("metadata") or {}
    if ref is None or ref.get("uid") != pmeta.get("uid") or ref.get("name") != pmeta.get("name"):
        return False
    return _requester(child) == _requester(policy)


def why_not_child(child: dict[str, Any], policy: dict[str, Any]) -> str:
    """For Events: why an object labelled with this policy does not count (never its content)."""
    ref = controller_of(child)
    if ref is None:
        return "it has no controller reference to a RemediationPolicy"
    if ref.get("uid") != (policy.get("metadata") or {}).get("uid"):
        return "its controller reference names another RemediationPolicy (uid differs)"
    who = _requester(child)[0]
    return (f"it was requested by {who or 'nobody recorded'}, not by the policy's author: "
            "only the operator creates a policy's children")
