"""Generate crds/*.yaml from the pydantic models (kubebuilder style: types are the truth).

pydantic's JSON schema uses $ref/$defs, anyOf for Optional and ``additionalProperties: false``;
a CRD's structural schema allows none of these. This module inlines refs, collapses
``Optional[X]`` to X and drops titles. Everything else the CRD says is declared on the models
(``remedy.api.common``: ``cel``, ``exactly_one_field``, ``printer_column``; the top-level
models' ``plural``, ``short_names`` and ``printer_columns``), so there is no per-kind code here.

    python -m remedy.crdgen            # write crds/
    python -m remedy.crdgen --check    # exit 1 when crds/ is stale (CI)
"""

from __future__ import annotations

import argparse
import copy
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .api.common import CrdRoot
from .api.policy import RemediationPolicy
from .api.remediation import Remediation
from .base.constants import GROUP, VERSION

# Every top-level model listed here becomes one CRD; nothing below knows which is which.
CRD_MODELS: tuple[type[CrdRoot], ...] = (Remediation, RemediationPolicy)

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
            if key == "x-kubernetes-validations":
                # pydantic sorts the keys of schema extras; a CEL rule reads better rule-first.
                out[key] = [{"rule": v["rule"], "message": v["message"], **v} for v in value]
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


def _model_of(annotation: Any) -> type[BaseModel]:
    """The model in ``X`` or ``X | None``."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"not a model: {annotation!r}")


def crd(model: type[CrdRoot]) -> dict[str, Any]:
    """The CRD of a top-level model: kind from its ``kind`` default, names and printer columns
    from its class attributes, spec and status schemas (with the CEL rules the models
    declare) from its fields."""
    spec = model_schema(_model_of(model.model_fields["spec"].annotation))
    status = model_schema(_model_of(model.model_fields["status"].annotation))
    return _crd(kind=str(model.model_fields["kind"].default), plural=model.plural, short=list(model.short_names),
                spec=spec, status=status, columns=[dict(c) for c in model.printer_columns])


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
    for model in CRD_MODELS:
        doc = crd(model)
        out[f"{GROUP}_{doc['spec']['names']['plural']}.yaml"] = header + yaml.safe_dump(doc, sort_keys=False, width=120)
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
