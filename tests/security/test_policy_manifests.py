"""The admission policies ship twice (kustomize deploy/admission, Helm templates/admission.yaml)
and the user ClusterRoles twice (deploy/rbac-users, templates/user-roles.yaml): the copies
must say the same thing, apart from names and the operator's identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.chart import render, render_result

REPO = Path(__file__).resolve().parents[2]
KINDS = ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy",
         "ValidatingAdmissionPolicyBinding")


def _normalise(doc: dict[str, Any], operator_user: str, prefix: str) -> dict[str, Any]:
    text = yaml.safe_dump(doc["spec"]).replace(operator_user, "<operator>").replace(f"{prefix}-", "<prefix>-")
    return {"kind": doc["kind"], "name": doc["metadata"]["name"].replace(f"{prefix}-", "<prefix>-"),
            "spec": yaml.safe_load(text)}


def _kustomize(part: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "deploy/admission" / part / "policies.yaml").read_text()) if d]


def _same(chart: list[dict[str, Any]], kustomize: list[dict[str, Any]]) -> None:
    want = sorted((_normalise(d, "system:serviceaccount:remedy-system:remedy", "remedy") for d in kustomize), key=str)
    got = sorted((_normalise(d, "system:serviceaccount:ops:rel-remedy", "rel-remedy") for d in chart), key=str)
    assert got == want


def test_chart_and_kustomize_ship_the_same_admission_policies() -> None:
    validating, mutating = _kustomize("validating"), _kustomize("mutating")
    assert {d["kind"] for d in validating} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert {d["kind"] for d in mutating} == {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}
    chart = [d for d in render() if d["kind"] in KINDS]
    assert len(chart) == len(validating) + len(mutating) == 6
    _same(chart, validating + mutating)
    # validatingOnly drops the mutating policy and nothing else: the checks stay on.
    only = [d for d in render("admission.mode=validatingOnly") if d["kind"] in KINDS]
    _same(only, validating)


def test_the_chart_has_no_switch_that_drops_the_validating_policies() -> None:
    for bad in ("admission.enabled=false", "admission.mode=off"):
        res = render_result(bad)
        assert res.returncode != 0 and "admission" in res.stderr, (bad, res.stderr)


def test_people_annotations_in_the_policy_are_the_ones_constants_names() -> None:
    """The validating policy treats every remedy.dev/ key as the operator's except a list of
    five; that list is PEOPLE_ANNOTATIONS, and every other name in constants.py that lands on a
    Remediation or policy is reserved by the prefix."""
    from remedy.base import constants

    doc = next(d for d in _kustomize("validating") if d["metadata"]["name"] == "remedy-identity")
    expr = next(v["expression"] for v in doc["spec"]["variables"] if v["name"] == "peopleKeys")
    assert yaml.safe_load(expr) == list(constants.PEOPLE_ANNOTATIONS)
    operator_keys = set(constants.LABEL_NAMES) | set(constants.ANNOTATION_NAMES) - set(constants.PEOPLE_ANNOTATIONS)
    assert all(k.startswith(f"{constants.GROUP}/") for k in operator_keys)
    assert {constants.LABEL_POLICY, constants.LABEL_FIRING, constants.LABEL_STEP, constants.ANN_SILENCE,
            constants.ANN_EPISODE, constants.ANN_LABELS} <= operator_keys


def test_chart_and_kustomize_ship_the_same_user_roles() -> None:
    kustomize = {d["metadata"]["name"].removeprefix("remedy:"): d["rules"]
                 for d in yaml.safe_load_all((REPO / "deploy/rbac-users/roles.yaml").read_text()) if d}
    chart = {d["metadata"]["name"].removeprefix("rel-remedy:"): d["rules"]
             for d in render() if d["kind"] == "ClusterRole" and ":" in d["metadata"]["name"]}
    assert chart == kustomize and len(chart) == 14
    from remedy.api.remediation import action_member_names

    assert {n.removeprefix("action:") for n in chart if n.startswith("action:")} == set(action_member_names())
    assert not [d for d in render("watch.mode=namespaced", "watch.namespaces={a}")
                if d["kind"] == "ClusterRole"], "namespaced mode keeps no cluster-scoped grant"
