"""`kubectl remedy apply/create` (issue 20): what it sends. The API server side (the validating
policy accepting exactly these annotations) is tests/security/test_validating_only.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from remedy.kubectl.client import PluginError
from remedy.kubectl.commands.apply import _documents, _prepared, _with_requester
from remedy.kubectl.identity import Identity


def test_a_copied_live_object_loses_what_the_server_set_and_any_forged_requester(tmp_path: Path) -> None:
    live = {"apiVersion": "remedy.dev/v1alpha1", "kind": "Remediation",
            "metadata": {"name": "r", "uid": "u", "resourceVersion": "9", "managedFields": [], "creationTimestamp": "t",
                         "annotations": {"remedy.dev/requested-by": "admin", "remedy.dev/requested-by-groups": "system:masters",
                                         "note": "kept"}},
            "spec": {"action": {"notify": {"message": "hi"}}}, "status": {"phase": "Succeeded"}}
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [live]}) + "---\n" + yaml.safe_dump(live))
    docs = list(_documents(str(path)))
    assert len(docs) == 2
    plural, ns, body = _prepared(docs[0], "shop", None)
    assert (plural, ns) == ("remediations", "shop") and "status" not in body
    assert set(body["metadata"]) == {"name", "namespace", "annotations"}
    me = Identity("alice", ("remedy-users", "system:authenticated"))
    sent = _with_requester(body, me.requester_annotations())["metadata"]["annotations"]
    assert sent == {"remedy.dev/requested-by": "alice",
                    "remedy.dev/requested-by-groups": "remedy-users,system:authenticated", "note": "kept"}
    assert me.approver_annotations()["remedy.dev/approved-by-groups"] == "remedy-users,system:authenticated"


def test_other_kinds_and_namespace_conflicts_are_refused_before_any_call() -> None:
    with pytest.raises(PluginError, match="use kubectl apply for other objects"):
        _prepared({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}, "shop", None)
    with pytest.raises(PluginError, match="does not match the namespace"):
        _prepared({"apiVersion": "remedy.dev/v1alpha1", "kind": "RemediationPolicy",
                   "metadata": {"name": "p", "namespace": "a"}}, "shop", "b")
    assert _prepared({"apiVersion": "remedy.dev/v1alpha1", "kind": "RemediationPolicy", "metadata": {"name": "p"}},
                     "shop", None)[:2] == ("remediationpolicies", "shop")
