"""The Argo CD ignoreDifferences example in docs/argocd.md names the field manager the
operator writes workloads with (remedy.base.constants.FIELD_MANAGER), for apps/Deployment, with the
sync options that make Argo CD respect it."""

from __future__ import annotations

from pathlib import Path

import yaml

from remedy.base.constants import FIELD_MANAGER

DOC = Path(__file__).resolve().parents[2] / "docs" / "argocd.md"


def test_ignore_differences_example_uses_the_operators_field_manager() -> None:
    text = DOC.read_text()
    block = text.split("<!-- argocd-ignore-differences -->", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    app = yaml.safe_load(block)
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    rule = app["spec"]["ignoreDifferences"][0]
    assert (rule["group"], rule["kind"], rule["managedFieldsManagers"]) == ("apps", "Deployment", [FIELD_MANAGER])
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
