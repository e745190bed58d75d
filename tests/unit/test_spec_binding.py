"""Issue 20 items 2 and 3, engine half, in process: an approval is bound to the digest of the
spec it approved, a spec edit voids it visibly, and a resumed attempt is reviewed again (spec
unchanged since intent, requester's rights, allowlist) before it acts. Holds without admission:
the fake store accepts every edit, as a cluster without the admission policies would."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from remedy.api.digest import spec_digest
from remedy.api.remediation import RemediationSpec
from remedy.base.constants import ANN_APPROVED_BY, ANN_APPROVED_SPEC_DIGEST, ANN_REQUESTED_BY, REMEDIATIONS
from remedy.clients.access_review import Permission, Requester
from remedy.lifecycle.authz import Guard
from tests.unit.test_engine_lifecycle import Script, World, crash_at, scripted_action, successor


def edit_spec(w: World, **changes: Any) -> None:
    """The requester edits the spec (generation moves on), as a cluster without admission allows."""
    obj = w.store.objects[(REMEDIATIONS, "ns", "r")]
    obj["spec"] = {**copy.deepcopy(obj["spec"]), **changes}
    obj["metadata"]["generation"] += 1
    w.store.touch(REMEDIATIONS, "r")


def approve(w: World, user: str = "carol", digest: str | None = None) -> None:
    ann = {ANN_APPROVED_BY: user}
    if digest != "":
        ann[ANN_APPROVED_SPEC_DIGEST] = digest or w.digest()
    w.store.touch(REMEDIATIONS, "r", annotations=ann)


# --- the digest -------------------------------------------------------------------------------------


def test_digest_ignores_the_fields_that_record_the_approval_and_fills_defaults() -> None:
    manifest = {"action": {"restartWorkload": {"target": {"name": "web"}}}, "approval": {"required": True}}
    stored = RemediationSpec.model_validate(manifest).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert spec_digest(manifest) == spec_digest(stored), "a manifest in Git and the stored object agree"
    approved = {**manifest, "approval": {"required": True, "approvedBy": "carol",
                                         "approvedSpecDigest": spec_digest(manifest)}}
    assert spec_digest(approved) == spec_digest(manifest)
    other = {**manifest, "action": {"restartWorkload": {"target": {"name": "payments"}}}}
    assert spec_digest(other) != spec_digest(manifest)


# --- approval bound to the digest -------------------------------------------------------------------


async def test_an_approval_without_a_digest_does_not_count() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create(approval={"required": True})
    assert await w.reconcile() == "AwaitingApproval"
    approve(w, digest="")
    assert await w.reconcile() == "AwaitingApproval" and not s.executed
    assert w.status()["approvals"][0]["reason"].startswith("NoSpecDigest")
    assert w.digest() in w.status()["message"], "the message shows the digest to approve"


async def test_a_spec_edit_after_approval_voids_it_visibly_and_nothing_runs() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create(approval={"required": True})
    assert await w.reconcile() == "AwaitingApproval"
    approved_digest = w.digest()
    # The approval arrives while the requester swaps the target; the engine sees both at once.
    approve(w, digest=approved_digest)
    edit_spec(w, action={"restartWorkload": {"target": {"name": "payments"}}})
    assert await w.reconcile() == "AwaitingApproval"
    assert s.plans == 0 and not s.executed
    rec = w.status()["approvals"][0]
    assert not rec["accepted"] and rec["reason"].startswith("SpecChanged") and rec["specDigest"] == approved_digest
    # Approving again approves the new spec.
    approve(w, "dave")
    assert await w.reconcile() == "Succeeded"
    assert w.status()["specDigest"] == w.digest()


async def test_an_accepted_approval_is_voided_by_a_later_edit_with_condition_and_event() -> None:
    s = Script()
    w = World(scripted_action(s), guard=Guard(reviewer=None, egress=None))
    w.create(approval={"required": True, "approvers": [{"kind": "User", "name": "carol"},
                                                       {"kind": "User", "name": "dave"}], "mode": "all"})
    assert await w.reconcile() == "AwaitingApproval"
    approve(w, "carol")
    assert await w.reconcile() == "AwaitingApproval"  # mode all: dave still missing
    assert w.status()["approvals"][0]["accepted"]
    edit_spec(w, reason="changed after carol approved")
    assert await w.reconcile() == "AwaitingApproval"
    assert w.condition("Approved") == ("False", "ApprovalVoided")
    assert "ApprovalVoided" in w.recorder.reasons("r")
    assert "voided" in w.status()["message"] and not w.status()["approvals"][0]["accepted"]
    approve(w, "dave")
    assert await w.reconcile() == "AwaitingApproval" and not s.executed, "carol's approval is of another spec"


async def test_spec_approved_by_needs_the_digest_of_the_spec() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create(approval={"required": True})
    assert await w.reconcile() == "AwaitingApproval"
    edit_spec(w, approval={"required": True, "approvedBy": "carol"})
    assert await w.reconcile() == "AwaitingApproval"
    edit_spec(w, approval={"required": True, "approvedBy": "carol", "approvedSpecDigest": w.digest()})
    assert await w.reconcile() == "Succeeded"
    assert w.status()["approvedBy"] == "carol"


# --- review at every use ----------------------------------------------------------------------------


async def test_a_spec_edited_after_intent_is_never_run_on_resume() -> None:
    """The observed case: edit the running spec, restart the operator; the new spec must not run."""
    s = Script()
    w = World(scripted_action(s, idempotent=True))
    w.create()
    await crash_at(w, "after_intent")
    assert w.status()["specDigest"] == w.digest()
    edit_spec(w, action={"restartWorkload": {"target": {"name": "payments"}}})
    assert await w.reconcile(engine=successor(w)) == "Failed"
    assert w.condition("Completed") == ("True", "SpecChanged")
    assert w.condition("Executed") == ("Unknown", "SpecChanged")
    assert s.executed == [] and s.observed == 0
    assert "EscalationRequired" in w.recorder.reasons("r")


class Revocable:
    """A SubjectAccessReview stand-in whose answers change when RoleBindings are removed."""

    def __init__(self) -> None:
        self.allowed_users = {"alice"}
        self.asked: list[tuple[str, str]] = []

    async def allowed(self, who: Requester, perm: Permission) -> tuple[bool, str]:
        self.asked.append((who.username, perm.describe()))
        return who.username in self.allowed_users, ""


async def test_rights_removed_while_awaiting_approval_refuse_the_run() -> None:
    s = Script()
    reviewer = Revocable()
    w = World(scripted_action(s), guard=Guard(reviewer=reviewer, egress=None))
    w.create(approval={"required": True}, annotations={ANN_REQUESTED_BY: "alice"})
    assert await w.reconcile() == "AwaitingApproval"
    reviewer.allowed_users.clear()  # her RoleBinding is removed
    approve(w)
    assert await w.reconcile() == "Failed"
    assert w.condition("Completed")[1] == "RequesterForbidden"
    assert s.plans == 0 and not s.executed


@pytest.mark.parametrize("point", ["after_intent", "after_action"])
async def test_rights_removed_before_a_resume_refuse_the_resumed_attempt(point: str) -> None:
    s = Script()
    reviewer = Revocable()
    w = World(scripted_action(s, idempotent=True), guard=Guard(reviewer=reviewer, egress=None))
    w.create(annotations={ANN_REQUESTED_BY: "alice"})
    await crash_at(w, point)
    executed_before = len(s.executed)
    reviewer.allowed_users.clear()
    engine = successor(w)
    engine.guard = w.engine.guard
    assert await w.reconcile(engine=engine) == "Failed"
    assert w.condition("Completed")[1] == "RequesterForbidden"
    assert len(s.executed) == executed_before, "not re-applied for a requester who lost the right"
    assert w.condition("Executed")[0] == "Unknown"


async def approved_then_interrupted() -> tuple[Script, World]:
    """An approved Remediation whose executor died right after recording its intent."""
    s = Script()
    w = World(scripted_action(s, idempotent=True))
    w.create(approval={"required": True})
    assert await w.reconcile() == "AwaitingApproval"
    approve(w)
    await crash_at(w, "after_intent")
    return s, w


async def test_an_approval_withdrawn_before_a_resume_stops_the_resumed_attempt() -> None:
    s, w = await approved_then_interrupted()
    obj = w.store.objects[(REMEDIATIONS, "ns", "r")]
    # The approval is gone from both places it could count from (annotation and the recorded
    # approvals, which only a writer of status could clear): the gate no longer holds.
    del obj["metadata"]["annotations"][ANN_APPROVED_BY]
    obj["status"]["approvals"] = []
    w.store.touch(REMEDIATIONS, "r")
    assert await w.reconcile(engine=successor(w)) == "Failed"
    assert w.condition("Completed") == ("True", "ApprovalWithdrawn")
    assert s.executed == [] and s.observed == 0


async def test_a_resume_with_the_approval_in_place_re_applies() -> None:
    """Control for the test above: the same resume with the approval kept runs."""
    s, w = await approved_then_interrupted()
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    assert len(s.executed) == 1


async def test_an_edit_racing_the_pass_is_not_recorded_as_the_approved_spec() -> None:
    """The pass read spec S1 with an approval of S1; the requester's edit to S2 lands right
    after that read, and the answer to the pass's own status patch carries S2. The intent must
    not record S2's digest for a plan made from S1: the pass gives up (Conflict) and the next
    one finds the approval void."""
    from remedy.base.errors import RetryableError

    s = Script()
    w = World(scripted_action(s))
    w.create(approval={"required": True})
    assert await w.reconcile() == "AwaitingApproval"
    approve(w)
    read = w.store.get_object

    async def read_then_edit(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = await read(plural, namespace, name)
        edit_spec(w, action={"restartWorkload": {"target": {"name": "payments"}}})
        w.store.get_object = read  # type: ignore[method-assign]  # one racing edit
        return obj

    w.store.get_object = read_then_edit  # type: ignore[method-assign]
    with pytest.raises(RetryableError, match="spec changed during planning"):
        await w.reconcile()
    assert "Running" not in w.store.phases("r") and not s.executed
    assert await w.reconcile() == "AwaitingApproval"
    assert w.condition("Approved") == ("False", "ApprovalVoided")
