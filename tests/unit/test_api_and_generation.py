"""The models are the source of truth: generated CRDs must be fresh, the registry must cover
every union member, and the schema must carry the rules kubectl apply relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from remedy import crdgen
from remedy.actions.registry import REGISTRY
from remedy.api import ActionSpec, Remediation, RemediationSpec, action_member_names, parse_duration

REPO = Path(__file__).resolve().parents[2]


def test_crds_on_disk_are_generated_from_the_models() -> None:
    res = subprocess.run([sys.executable, "-m", "remedy.crdgen", "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_check_fails_when_a_crd_is_stale(tmp_path: Path) -> None:
    for name, text in crdgen.render_all().items():
        (tmp_path / name).write_text(text.replace("maxReplicas", "maxReplicaz"))
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def test_every_action_member_is_registered_and_vice_versa() -> None:
    assert sorted(action_member_names()) == sorted(REGISTRY)


def test_every_registered_action_uses_the_union_members_params_model() -> None:
    for name, info in ActionSpec.model_fields.items():
        member = info.alias or name
        annotation = info.annotation
        assert REGISTRY[member].params.__name__ in str(annotation), member


def test_structural_schema_has_no_refs_or_anyof() -> None:
    for text in crdgen.render_all().values():
        assert "$ref" not in text and "anyOf" not in text and "oneOf" not in text


def test_union_rule_lists_every_member() -> None:
    crd = crdgen.crd(Remediation)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["action"]
    rule = schema["x-kubernetes-validations"][0]
    for member in action_member_names():
        assert f"has(self.{member})" in rule["rule"]
    assert "exactly one" in rule["message"]


def test_printer_columns_show_action_target_phase() -> None:
    cols = [c["name"] for c in crdgen.crd(Remediation)["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols[:4] == ["Action", "Target", "Phase", "Reason"] and "Age" in cols


def test_crdgen_has_no_per_kind_code() -> None:
    """CEL rules and printer columns live on the models; crdgen only translates."""
    source = Path(crdgen.__file__).read_text()
    for word in (*action_member_names(), "trigger", "replicas", "backend", "jsonPath\": \".status"):
        assert word not in source, word
    assert '["properties"]' not in source


def test_cel_rules_come_from_the_models_they_validate() -> None:
    from remedy.api.policy import RemediationPolicy

    rem = crdgen.crd(Remediation)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    scale = rem["properties"]["action"]["properties"]["scaleWorkload"]
    assert [v["rule"] for v in scale["x-kubernetes-validations"]] == [
        "has(self.replicas) != has(self.delta)", "self.minReplicas <= self.maxReplicas"]
    assert list(scale["x-kubernetes-validations"][0]) == ["rule", "message"]
    pol = crdgen.crd(RemediationPolicy)["spec"]["versions"][0]
    trigger = pol["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["trigger"]
    assert trigger["x-kubernetes-validations"][0]["rule"] == "[has(self.prometheus), has(self.alert)].filter(x, x).size() == 1"
    assert pol["additionalPrinterColumns"] == [dict(c) for c in RemediationPolicy.printer_columns]


@pytest.mark.parametrize("spec, fragment", [
    ({"action": {}}, "exactly one action, got 0"),
    ({"action": {"notify": {"message": "a"}, "scaleWorkload": {"target": {"name": "a"}, "replicas": 1}}}, "got 2"),
])
def test_union_exactly_one_in_models(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        RemediationSpec.model_validate(spec).action.only()


def test_unknown_fields_are_rejected_by_the_models() -> None:
    with pytest.raises(ValidationError):
        RemediationSpec.model_validate({"action": {"notify": {"message": "x", "bogus": 1}}})


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_examples_validate_against_the_models() -> None:
    for path in sorted((REPO / "docs" / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Remediation":
                RemediationSpec.model_validate(doc["spec"]).action.only()
