"""Generate crds/*.yaml from the pydantic models (kubebuilder style: types are the truth).

pydantic's JSON schema uses $ref/$defs, anyOf for Optional and ``additionalProperties: false``;
a CRD's structural schema allows none of these. This module inlines refs, collapses
``Optional[X]`` to X, drops titles, and adds the CEL rules that make unions one-of.

    python -m remedy.crdgen            # write crds/
    python -m remedy.crdgen --check    # exit 1 when crds/ is stale (CI)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from .constants import GROUP, POLICIES, REMEDIATIONS, VERSION
from .api.policy import RemediationPolicySpec, RemediationPolicyStatus
from .api.remediation import RemediationSpec, RemediationStatus, action_member_names

Schema = dict[str, Any]
_DROP = {"title", "additionalProperties", "discriminator"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)
            return _inline(target, defs)
        if "anyOf" in node:
            members = [m for m in node["anyOf"] if m.get("type") != "null"]
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if len(members) == 1:
                merged = _inline(members[0], defs)
                merged.update({k: v for k, v in rest.items() if k != "default" or v is not None})
                return _inline(merged, defs)
        out: Schema = {}
        for key, value in node.items():
            if key in _DROP:
                if key == "additionalProperties" and isinstance(value, dict):
                    out[key] = _inline(value, defs)
                continue
            if key == "default" and value is None:
                continue
            if key == "const":
                out["enum"] = [value]
                continue
            out[key] = _inline(value, defs)
        if "properties" in out:
            out.setdefault("type", "object")
            # Defaults for required fields are meaningless in a CRD; 'required' of pydantic only
            # lists fields without defaults, which is what the API server should enforce.
        if out.get("x-kubernetes-preserve-unknown-fields"):
            out = {k: v for k, v in out.items() if k not in {"additionalProperties", "default"}}
            out["type"] = "object"
        return out
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def model_schema(model: type[Any]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _inline(raw, defs)
    return schema


def _one_of_rule(members: list[str], path: str) -> dict[str, str]:
    checks = ", ".join(f"has(self.{m})" for m in members)
    return {
        "rule": f"[{checks}].filter(x, x).size() == 1",
        "message": f"{path} must set exactly one of: {', '.join(members)}",
    }


def remediation_crd() -> dict[str, Any]:
    spec = model_schema(RemediationSpec)
    spec["properties"]["action"]["x-kubernetes-validations"] = [
        _one_of_rule(action_member_names(), "spec.action")
    ]
    backend = spec["properties"]["action"]["properties"]["purgeIdempotencyKeys"]
    backend["x-kubernetes-validations"] = [
        {"rule": "has(self.http) || has(self.redis)", "message": "purgeIdempotencyKeys needs http or redis settings"},
        {"rule": "self.backend != 'http' || has(self.http)", "message": "backend http needs purgeIdempotencyKeys.http"},
        {"rule": "self.backend != 'redis' || has(self.redis)", "message": "backend redis needs purgeIdempotencyKeys.redis"},
    ]
    scale = spec["properties"]["action"]["properties"]["scaleWorkload"]
    scale["x-kubernetes-validations"] = [
        {"rule": "has(self.replicas) != has(self.delta)", "message": "scaleWorkload needs exactly one of replicas or delta"},
        {"rule": "self.minReplicas <= self.maxReplicas", "message": "scaleWorkload.minReplicas exceeds maxReplicas"},
    ]
    status = model_schema(RemediationStatus)
    return _crd(
        kind="Remediation",
        plural="remediations",
        short=["rem"],
        spec=spec,
        status=status,
        columns=[
            {"name": "Action", "type": "string", "jsonPath": ".status.action"},
            {"name": "Target", "type": "string", "jsonPath": ".status.target"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Completed\")].reason"},
            {"name": "DryRun", "type": "boolean", "jsonPath": ".spec.dryRun", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def policy_crd() -> dict[str, Any]:
    spec = model_schema(RemediationPolicySpec)
    spec["properties"]["trigger"]["x-kubernetes-validations"] = [
        _one_of_rule(["prometheus", "alert"], "spec.trigger")
    ]
    status = model_schema(RemediationPolicyStatus)
    return _crd(
        kind="RemediationPolicy",
        plural="remediationpolicies",
        short=["rempol"],
        spec=spec,
        status=status,
        columns=[
            {"name": "Trigger", "type": "string", "jsonPath": ".spec.trigger.alert.alertname"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Paused", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Paused\")].status"},
            {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
            {"name": "Runs", "type": "integer", "jsonPath": ".status.trackRecord.runs"},
            {"name": "Verified", "type": "integer", "jsonPath": ".status.trackRecord.verified"},
            {"name": "Ineffective", "type": "integer", "jsonPath": ".status.trackRecord.ineffective", "priority": 1},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.trackRecord.failed", "priority": 1},
            {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
            {"name": "Runs", "type": "integer", "jsonPath": ".status.trackRecord.runs"},
            {"name": "Verified", "type": "integer", "jsonPath": ".status.trackRecord.verified"},
            {"name": "Ineffective", "type": "integer", "jsonPath": ".status.trackRecord.ineffective", "priority": 1},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.trackRecord.failed", "priority": 1},
            {"name": "Fired", "type": "integer", "jsonPath": ".status.counters.fired"},
            {"name": "LastFired", "type": "date", "jsonPath": ".status.lastFiredAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def _crd(*, kind: str, plural: str, short: list[str], spec: Schema, status: Schema, columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "remedy"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["remedy"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{kind} (generated from remedy.api; do not edit).",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    header = "# Generated by `python -m remedy.crdgen` from operator/remedy/api. Do not edit.\n"
    out = {}
    for name, crd in ((f"{GROUP}_{REMEDIATIONS}.yaml", remediation_crd()), (f"{GROUP}_{POLICIES}.yaml", policy_crd())):
        out[name] = header + yaml.safe_dump(crd, sort_keys=False, width=120)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files on disk are stale")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "crds"))
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    # The Helm chart ships the same files (Helm installs crds/ of a chart before templates).
    dirs = [out_dir, out_dir.parent / "charts" / "remedy" / "crds"]
    stale = []
    for name, text in render_all().items():
        for d in dirs:
            path = d / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            elif d.exists() or d == out_dir:
                d.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print("stale CRDs (run `python -m remedy.crdgen`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
