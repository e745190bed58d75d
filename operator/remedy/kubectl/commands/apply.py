"""``kubectl remedy apply -f FILE`` and ``kubectl remedy create -f FILE``: Remediations and
RemediationPolicies with the requester annotations written by the client.

Why: remedy runs an action only with the rights of the user the API server authenticated
(docs/security.md). Where a MutatingAdmissionPolicy is served it stamps that user; where it is
not (off by default in Kubernetes 1.34/1.35), the ValidatingAdmissionPolicies still accept only
annotations that name the requesting user exactly, so the client must write them. These
commands ask the API server who you are (SelfSubjectReview) and write that, and only that:
on create, and when the apply changes the spec (changing what runs makes you its requester);
an apply that changes no spec keeps the recorded requester. With the mutating policy served
they are harmless: it writes the same values.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ...base.constants import (
    ANN_REQUESTED_BY,
    ANN_REQUESTED_BY_GROUPS,
    API_VERSION,
    GROUP,
    POLICIES,
    POLICY_KIND,
    REMEDIATION_KIND,
    REMEDIATIONS,
)
from .. import identity
from ..client import Kube, PluginError
from ..command import Command, namespace, output
from ..render import dump

_PLURALS = {REMEDIATION_KIND: REMEDIATIONS, POLICY_KIND: POLICIES}
# Set by the API server; a copy of a live object (kubectl get -o yaml) must not send them.
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


def _documents(path: str) -> Iterator[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        docs = list(yaml.safe_load_all(text))
    except OSError as exc:
        raise PluginError(f"the path {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PluginError(f"error parsing {path}: {exc}") from None
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise PluginError(f"error parsing {path}: a document is not an object")
        if doc.get("kind") == "List":
            yield from (i for i in doc.get("items") or [] if isinstance(i, dict))
        else:
            yield doc


def _prepared(doc: dict[str, Any], default_ns: str, explicit_ns: str | None) -> tuple[str, str, dict[str, Any]]:
    kind = doc.get("kind")
    if kind not in _PLURALS or doc.get("apiVersion") != API_VERSION:
        raise PluginError(f"kubectl remedy handles {API_VERSION} Remediation and RemediationPolicy only, not "
                          f"{doc.get('apiVersion')} {kind}; use kubectl apply for other objects")
    body = copy.deepcopy(doc)
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    for field in _SERVER_FIELDS:
        meta.pop(field, None)
    ns = meta.get("namespace")
    if ns and explicit_ns and ns != explicit_ns:
        raise PluginError(f"the namespace from the provided object {ns!r} does not match the namespace "
                          f"{explicit_ns!r}. You must pass '--namespace={ns}' to perform this operation.")
    ns = ns or default_ns
    meta["namespace"] = ns
    return _PLURALS[str(kind)], ns, body


def _with_requester(body: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    ann = out["metadata"].setdefault("annotations", {})
    for key in (ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS):
        ann.pop(key, None)
    ann.update(annotations)
    return out


def _apply_one(kube: Kube, who: identity.Identity, plural: str, ns: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if not body["metadata"].get("name"):
        raise PluginError("error: resource name may not be empty (kubectl remedy apply needs metadata.name; "
                          "kubectl remedy create accepts generateName)")
    live = kube.find(plural, ns, body["metadata"]["name"])
    if live is None:  # a plain create: remedy:requester grants create, not patch
        return kube.create(plural, ns, _with_requester(body, who.requester_annotations())), "created"
    live_ann = (live.get("metadata") or {}).get("annotations") or {}
    kept = {k: live_ann[k] for k in (ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS) if k in live_ann}
    # Does this apply change the spec? Only the API server can say (defaults, pruning): a dry
    # run that keeps the recorded requester. Refused (it would change the spec, which needs
    # your name) or a different spec: you become the requester.
    try:
        trial = kube.apply(plural, ns, _with_requester(body, kept), dry_run=True)
        changes_spec = trial.get("spec") != live.get("spec")
    except PluginError:
        changes_spec = True
    final = kube.apply(plural, ns, _with_requester(body, who.requester_annotations() if changes_spec else kept))
    same = (final.get("metadata") or {}).get("resourceVersion") == (live.get("metadata") or {}).get("resourceVersion")
    return final, "unchanged" if same else "configured"


def _run(kube: Kube, args: argparse.Namespace, create_only: bool) -> int:
    fmt = output(args, ("json", "yaml", "name"))
    default_ns = namespace(kube, args)
    prepared = [_prepared(doc, default_ns, getattr(args, "namespace", None)) for doc in _documents(args.filename)]
    if not prepared:
        raise PluginError(f"no objects passed to {'create' if create_only else 'apply'}")
    who = identity.require(kube)
    results = []
    for plural, ns, body in prepared:
        if create_only:
            obj, verb = kube.create(plural, ns, _with_requester(body, who.requester_annotations())), "created"
        else:
            obj, verb = _apply_one(kube, who, plural, ns, body)
        results.append(obj)
        if fmt is None or fmt == "name":
            kind = "remediation" if plural == REMEDIATIONS else "remediationpolicy"
            line = f"{kind}.{GROUP}/{obj['metadata']['name']}"
            sys.stdout.write(line + ("\n" if fmt == "name" else f" {verb} (requested by {_requester(obj)})\n"))
    if fmt in ("json", "yaml"):
        sys.stdout.write(dump(results[0] if len(results) == 1 else {"apiVersion": "v1", "kind": "List", "items": results}, fmt))
    return 0


def _requester(obj: dict[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_REQUESTED_BY, "-"))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True,
                        help="file with Remediations and/or RemediationPolicies (YAML or JSON; - for stdin)")


APPLY = Command("apply", "create or update Remediations and policies from a file, recording you as requester "
                "(needed where no MutatingAdmissionPolicy stamps it)",
                lambda kube, args: _run(kube, args, create_only=False), None, _arguments)
CREATE = Command("create", "create Remediations and policies from a file, recording you as requester",
                 lambda kube, args: _run(kube, args, create_only=True), None, _arguments)
