"""The digest of a Remediation's spec: what an approval and an attempt are bound to.

Why (issue 20): an approval used to be a name. After it was given the requester could edit the
spec (another URL, another Secret, another action) and the old approval ran the new spec. Now
every approval carries the digest of the spec it approved (``kubectl remedy approve`` writes the
``approved-spec-digest`` annotation; ``spec.approval.approvedSpecDigest`` next to
``approvedBy``), the engine computes the digest of the spec it is about to run and counts the
approval only when they are equal, and the intent record keeps the digest so a resumed attempt
never runs an edited spec.

The digest is SHA-256 over canonical JSON (sorted keys, no spaces) of the spec as the
``RemediationSpec`` model reads it (defaults filled in, so a manifest in Git and the object the
API server stores give the same digest), without the two fields that *record* the approval
(``approval.approvedBy``, ``approval.approvedSpecDigest``): writing them must not change what
they refer to. A spec the model rejects is digested as written (it never runs anyway).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

PREFIX = "sha256:"
_RECORDING_FIELDS = ("approvedBy", "approvedSpecDigest")


def _normalized(spec: dict[str, Any]) -> Any:
    from .remediation import RemediationSpec

    try:
        return RemediationSpec.model_validate(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    except ValidationError:
        return spec


def spec_digest(spec: dict[str, Any] | None) -> str:
    doc = _normalized(dict(spec or {}))
    if isinstance(doc, dict) and isinstance(doc.get("approval"), dict):
        doc = {**doc, "approval": {k: v for k, v in doc["approval"].items() if k not in _RECORDING_FIELDS}}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return PREFIX + hashlib.sha256(text.encode()).hexdigest()


def short(digest: str | None) -> str:
    """For messages: ``sha256:0123456789ab``."""
    return (digest or "none")[: len(PREFIX) + 12]
