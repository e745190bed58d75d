"""The approval gate (remedy.lifecycle.approval): who counts, mode any/all, fourEyes, expiry.
Pure logic, so every combination is checked here; the API-server side (forged names
refused) is in tests/security/test_requester.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from remedy.api.remediation import Approval
from remedy.clients.access_review import Requester
from remedy.lifecycle.approval import evaluate

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
ALICE = Requester("alice", ("remedy-users", "system:authenticated"))


def obj(approved_by: str | None = None, groups: str = "", created: datetime = NOW) -> dict[str, Any]:
    ann = {"remedy.dev/requested-by": "alice"}
    if approved_by:
        ann["remedy.dev/approved-by"] = approved_by
        ann["remedy.dev/approved-by-groups"] = groups
    return {"metadata": {"annotations": ann, "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")}}


def test_not_required_passes_without_approval() -> None:
    gate = evaluate(obj(), Approval(), False, ALICE, None, NOW)
    assert (gate.needed, gate.approved) == (False, True)


def test_action_that_requires_approval_waits() -> None:
    gate = evaluate(obj(), Approval(), True, ALICE, None, NOW)
    assert (gate.needed, gate.approved) == (True, False)


@pytest.mark.parametrize(("approver", "four_eyes", "ok"), [("bob", True, True), ("alice", True, False), ("alice", False, True)])
def test_four_eyes(approver: str, four_eyes: bool, ok: bool) -> None:
    gate = evaluate(obj(approver), Approval(required=True, four_eyes=four_eyes), False, ALICE, None, NOW)
    assert gate.approved is ok
    assert gate.records[0]["accepted"] is ok
    if not ok:
        assert gate.records[0]["reason"].startswith("SelfApproval")


def test_four_eyes_without_a_recorded_requester_never_counts() -> None:
    gate = evaluate(obj("bob"), Approval(required=True, four_eyes=True), False, None, None, NOW)
    assert not gate.approved and gate.records[0]["reason"].startswith("RequesterUnknown")


def test_approvers_by_user_and_group() -> None:
    approval = Approval.model_validate({"approvers": [{"kind": "User", "name": "carol"}, {"kind": "Group", "name": "sre"}]})
    assert evaluate(obj("carol"), approval, False, ALICE, None, NOW).approved
    assert evaluate(obj("dave", "sre,system:authenticated"), approval, False, ALICE, None, NOW).approved
    nope = evaluate(obj("dave", "dev"), approval, False, ALICE, None, NOW)
    assert not nope.approved and nope.needed and nope.records[0]["reason"].startswith("NotAnApprover")


def test_mode_all_collects_approvals_over_passes() -> None:
    approval = Approval.model_validate({"mode": "all", "approvers": [{"kind": "User", "name": "carol"},
                                                                     {"kind": "Group", "name": "sre"}]})
    first = evaluate(obj("carol"), approval, False, ALICE, None, NOW)
    assert not first.approved and len(first.new_records) == 1
    again = evaluate(obj("carol"), approval, False, ALICE, first.records, NOW)
    assert not again.approved and again.new_records == []  # the same approval is recorded once
    second = evaluate(obj("dave", "sre"), approval, False, ALICE, first.records, NOW)
    assert second.approved and second.approved_by == "carol, dave"


def test_records_are_judged_again_on_every_pass() -> None:
    """An approval accepted earlier stops counting if the rules now exclude it."""
    first = evaluate(obj("bob"), Approval(required=True), False, ALICE, None, NOW)
    assert first.approved
    later = evaluate(obj("bob"), Approval(required=True, four_eyes=True), False, Requester("bob"), first.records, NOW)
    assert not later.approved and later.records[0]["reason"].startswith("SelfApproval")


def test_expiry() -> None:
    approval = Approval(required=True, expires_after="10m")
    waiting = evaluate(obj(created=NOW - timedelta(minutes=4)), approval, False, ALICE, None, NOW)
    assert not waiting.expired and waiting.recheck_after == pytest.approx(360)
    late = evaluate(obj(created=NOW - timedelta(minutes=11)), approval, False, ALICE, None, NOW)
    assert late.expired and "expiresAfter 10m" in late.message
    approved_late = evaluate(obj("bob", created=NOW - timedelta(minutes=11)), approval, False, ALICE, None, NOW)
    assert approved_late.approved and not approved_late.expired


def test_spec_approved_by_counts_as_that_user_without_groups() -> None:
    approval = Approval.model_validate({"approvedBy": "carol", "approvers": [{"kind": "Group", "name": "sre"}]})
    gate = evaluate(obj(), approval, False, ALICE, None, NOW)
    assert not gate.approved and gate.records[0]["user"] == "carol" and gate.records[0]["groups"] == []
