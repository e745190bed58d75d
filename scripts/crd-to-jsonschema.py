#!/usr/bin/env python3
"""Write standalone JSON schemas for kubeconform, offline.

kubeconform's built-in schemas come from GitHub (yannh/kubernetes-json-schema), which is not
reachable here, and it has no schemas for our CRDs. So we make both:

  crd-to-jsonschema.py crd FILE.yaml... -o DIR
      one schema per CRD version, from spec.versions[].schema.openAPIV3Schema;
  crd-to-jsonschema.py openapi OPENAPI_V2.json -o DIR
      one schema per built-in kind (x-kubernetes-group-version-kind) from an API server's
      /openapi/v2 (`kubectl get --raw /openapi/v2`), with every $ref inlined.

Layout: DIR/<group>/<kind>_<version>.json, where <group> is the first part of apiVersion
(the version itself for the core group: v1/pod_v1.json), which is what this kubeconform
-schema-location template resolves to:

  -schema-location 'DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'

Strict, like kubeconform's "-strict" schema flavour: every object schema that lists
properties (and allows no unknown fields) gets additionalProperties: false, so a misspelt
field fails validation. Kubernetes' int-or-string and quantity formats become oneOf.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}
QUANTITY_REF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
# A CRD's openAPIV3Schema (JSONSchemaProps) is recursive and has properties literally named
# "$ref" and "$schema", which JSON schema compilers misread: leave it open (the API server
# validates it structurally at apply time anyway).
OPEN_PREFIX = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"


def strictify(schema: Any) -> Any:
    """Recursively: int-or-string -> oneOf, and additionalProperties: false on closed objects."""
    if isinstance(schema, list):
        return [strictify(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strictify(v) if k not in ("enum", "default", "example", "required") else v for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False) or out.get("format") == "int-or-string":
        out.pop("type", None)
        out.pop("format", None)
        out.update(copy.deepcopy(INT_OR_STRING))
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _write(out: Path, api_version: str, kind: str, schema: dict[str, Any]) -> Path:
    group = api_version.split("/")[0]
    version = api_version.split("/")[-1]
    path = out / group / f"{kind.lower()}_{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=1, sort_keys=True))
    return path


def from_crds(files: list[Path], out: Path) -> list[Path]:
    written = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                schema = copy.deepcopy((v.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"})
                props = schema.setdefault("properties", {})
                # The API server accepts these on every object; CRDs often leave them out.
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                props.setdefault("metadata", {"type": "object"})
                schema = strictify(schema)
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                api_version = f"{spec['group']}/{v['name']}"
                written.append(_write(out, api_version, spec["names"]["kind"], schema))
    return written


def _resolve(defs: dict[str, Any], node: Any, stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_resolve(defs, n, stack) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        name = ref[len("#/definitions/"):]
        if name == QUANTITY_REF:
            return copy.deepcopy(QUANTITY)
        if name.startswith(OPEN_PREFIX) or name in stack:  # recursive types: leave them open
            return {}
        return _resolve(defs, defs[name], stack + (name,))
    return {k: _resolve(defs, v, stack) for k, v in node.items()}


def from_openapi(openapi: Path, out: Path) -> list[Path]:
    doc = json.loads(openapi.read_text())
    defs: dict[str, Any] = doc["definitions"]
    written = []
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind") or []:
            if gvk["kind"].endswith("List") or gvk["kind"] in ("WatchEvent", "DeleteOptions", "Status"):
                continue
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            schema = strictify(_resolve(defs, d, (name,)))
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            written.append(_write(out, api_version, gvk["kind"], schema))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=["crd", "openapi"])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.source == "crd":
        written = from_crds(args.files, args.out)
    else:
        written = [w for f in args.files for w in from_openapi(f, args.out)]
    print(f"wrote {len(written)} schemas to {args.out}", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
