"""Earned autonomy: modes applied to children, the track record and the promotion decision
(pure functions over child objects shaped as the API server returns them)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from remedy.api.policy import RemediationPolicySpec
from remedy.policies import autonomy

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def spec(**extra: Any) -> RemediationPolicySpec:
    return RemediationPolicySpec.model_validate({
        "trigger": {"alert": {"alertname": "X"}}, "template": {"action": {"notify": {"message": "m"}}},
        "verify": {"promql": "up == 0", "timeout": "60s"}, **extra})


def child(name: str, phase: str, reason: str, *, mode: str = "auto", since: str | None = "S", created_ago: float = 100,
          done_ago: float = 90, verified: bool = False, **ann: str) -> dict[str, Any]:
    annotations = {autonomy.ANN_MODE: mode, "remedy.dev/fingerprint": "fp", **ann}
    if since:
        annotations[autonomy.ANN_MODE_SINCE] = since
    conds = [{"type": "Completed", "status": "True", "reason": reason}]
    if verified:
        conds.append({"type": "Verified", "status": "True", "reason": "Verified"})
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": ts(created_ago), "annotations": annotations},
            "status": {"phase": phase, "completedAt": ts(done_ago), "conditions": conds}}


def test_modes_shape_the_child_spec() -> None:
    for mode, dry, approval in (("shadow", True, None), ("approve", False, {"required": True}), ("auto", False, None)):
        child_spec: dict[str, Any] = {"dryRun": False}
        ann: dict[str, str] = {}
        autonomy.apply_mode(child_spec, ann, mode, "S")
        assert child_spec["dryRun"] is dry and child_spec.get("approval") == approval
        assert ann == {autonomy.ANN_MODE: mode, autonomy.ANN_MODE_SINCE: "S"}


def test_effective_mode_follows_status_only_while_derived_from_spec_and_never_past_max() -> None:
    s = spec(mode="shadow", promotion={"after": 2})
    assert autonomy.effective_mode(s, {}) == "shadow"
    assert autonomy.effective_mode(s, {"mode": "auto", "modeBase": "shadow"}) == "auto"
    assert autonomy.effective_mode(s, {"mode": "auto", "modeBase": "approve"}) == "shadow"  # spec.mode changed: reset
    capped = spec(mode="shadow", maxMode="approve", promotion={"after": 2})
    assert autonomy.effective_mode(capped, {"mode": "auto", "modeBase": "shadow"}) == "approve"


def test_track_record_counts_each_outcome_kind_and_median() -> None:
    s = spec()
    kids = [
        child("a", "Succeeded", "Verified", verified=True, created_ago=100, done_ago=90),
        child("b", "Succeeded", "Verified", verified=True, created_ago=80, done_ago=50, **{autonomy.ANN_REFIRED_AT: ts(40)}),
        child("c", "Failed", "TargetNotFound", done_ago=30),
        child("d", "Skipped", "AlertResolved", done_ago=20),
        child("e", "Succeeded", "DryRun", mode="shadow", created_ago=200, done_ago=199, **{autonomy.ANN_CLEARED_AT: ts(190)}),
        child("f", "Succeeded", "DryRun", mode="shadow", created_ago=20, done_ago=19),
        child("g", "Succeeded", "DryRun", mode="shadow", created_ago=100, done_ago=98),
    ]
    record, scored = autonomy.track_record(kids, s, NOW.timestamp())
    assert (record["runs"], record["succeeded"], record["verified"], record["failed"], record["ineffective"], record["planned"]) == (6, 2, 1, 1, 1, 3)
    assert record["clearedOnItsOwn"] == 1
    assert record["medianSecondsToVerified"] == 20.0  # a: 10 s, b: 30 s
    would = {e["name"]: e.get("wouldHave") for _, e in scored}
    assert would["e"] == "clearedOnItsOwn" and would["f"] == "pending" and would["g"] == "stillFiring"
    assert [e["name"] for e in record["lastOutcomes"]] == ["e", "g", "a", "b", "c", "f"]


def test_shadow_promotes_after_n_planned_runs_that_still_needed_action() -> None:
    s = spec(mode="shadow", promotion={"after": 2})
    st = {"mode": "shadow", "modeBase": "shadow", "modeSince": "S"}
    one = [child("a", "Succeeded", "DryRun", mode="shadow", created_ago=300, done_ago=299)]
    _, scored = autonomy.track_record(one, s, NOW.timestamp())
    assert autonomy.decide(s, st, scored, NOW.timestamp()) is None
    two = one + [child("b", "Succeeded", "DryRun", mode="shadow", created_ago=200, done_ago=199)]
    _, scored = autonomy.track_record(two, s, NOW.timestamp())
    decision = autonomy.decide(s, st, scored, NOW.timestamp())
    assert decision is not None and decision[:2] == ("approve", "Promoted")
    # An alert that cleared on its own breaks the streak: the action was not needed.
    cleared = two + [child("c", "Succeeded", "DryRun", mode="shadow", created_ago=150, done_ago=149, **{autonomy.ANN_CLEARED_AT: ts(140)})]
    _, scored = autonomy.track_record(cleared, s, NOW.timestamp())
    assert autonomy.decide(s, st, scored, NOW.timestamp()) is None


def test_approve_promotes_on_verified_streak_in_current_mode_only_and_respects_max_mode() -> None:
    s = spec(mode="shadow", promotion={"after": 2})
    st = {"mode": "approve", "modeBase": "shadow", "modeSince": "S2"}
    old = [child(n, "Succeeded", "Verified", mode="approve", since="S1", verified=True) for n in "ab"]
    _, scored = autonomy.track_record(old, s, NOW.timestamp())
    assert autonomy.decide(s, st, scored, NOW.timestamp()) is None  # earned in an earlier period
    new = old + [child(n, "Succeeded", "Verified", mode="approve", since="S2", verified=True, done_ago=10) for n in "cd"]
    _, scored = autonomy.track_record(new, s, NOW.timestamp())
    assert autonomy.decide(s, st, scored, NOW.timestamp())[:2] == ("auto", "Promoted")  # type: ignore[index]
    capped = spec(mode="shadow", maxMode="approve", promotion={"after": 2})
    assert autonomy.decide(capped, st, scored, NOW.timestamp()) is None
    stale = spec(mode="shadow", promotion={"after": 2, "within": "5s"})
    assert autonomy.decide(stale, st, scored, NOW.timestamp()) is None


def test_auto_demotes_on_ineffective_chain_or_failures() -> None:
    s = spec(mode="auto", promotion={"after": 2, "demoteAfterIneffective": 2, "demoteAfterFailures": 3})
    st = {"mode": "auto", "modeBase": "auto", "modeSince": "S"}
    ineffective = [child(n, "Succeeded", "Verified", verified=True, **{autonomy.ANN_REFIRED_AT: ts(1)}) for n in "ab"]
    _, scored = autonomy.track_record(ineffective, s, NOW.timestamp())
    decision = autonomy.decide(s, st, scored, NOW.timestamp())
    assert decision is not None and decision[:2] == ("approve", "Demoted") and "ineffective" in decision[2]
    failures = [child(n, "Failed", "X", done_ago=i) for i, n in enumerate("cde")]
    _, scored = autonomy.track_record(failures[:2], s, NOW.timestamp())
    assert autonomy.decide(s, st, scored, NOW.timestamp()) is None
    _, scored = autonomy.track_record(failures, s, NOW.timestamp())
    assert autonomy.decide(s, st, scored, NOW.timestamp())[:2] == ("approve", "Demoted")  # type: ignore[index]
    assert autonomy.decide(spec(mode="auto"), st, scored, NOW.timestamp()) is None  # no spec.promotion: never moves


def test_mode_status_initialises_and_changes() -> None:
    s = spec(mode="shadow", promotion={"after": 1})
    init = autonomy.mode_status(s, {}, None)
    assert init["mode"] == "shadow" and init["modeBase"] == "shadow" and init["modeSince"]
    assert autonomy.mode_status(s, init, None) == {}
    moved = autonomy.mode_status(s, init, ("approve", "Promoted", "why"))
    assert moved["mode"] == "approve" and moved["modeBase"] == "shadow"
    assert autonomy.condition_args("auto", ("auto", "Promoted", "3 verified"), None) == ("True", "Promoted", "promoted to auto: 3 verified")
    assert autonomy.condition_args("approve", None, None)[0:2] == ("False", "Configured")
