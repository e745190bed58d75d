"""engine.history decisions without a cluster: limits, TTL, and what the guards keep.
(The same rules run against the real control plane in tests/e2e/test_history.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from remedy.runtime.history import beyond_history, guard_horizon, ttl_expired

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def child(name: str, phase: str, ago: timedelta, **spec: Any) -> dict[str, Any]:
    done = (NOW - ago).isoformat().replace("+00:00", "Z")
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "labels": {"remedy.dev/policy": "p"}},
            "spec": spec, "status": {"phase": phase, "completedAt": done}}


def test_guard_horizon_is_the_longest_window() -> None:
    assert guard_horizon({}) == 3600
    assert guard_horizon({"guards": {"cooldown": "2h"}}) == 7200
    assert guard_horizon({"escalate": [{"after": "50m"}, {"after": "40m"}]}) == 5400
    assert guard_horizon({"promotion": {"within": "168h"}}) == 168 * 3600


def test_limits_keep_newest_and_spare_horizon_and_streak() -> None:
    kids = [child("ok-1", "Succeeded", timedelta(hours=2)), child("ok-2", "Succeeded", timedelta(hours=3)),
            child("ok-3", "Skipped", timedelta(hours=4)), child("ok-new", "Succeeded", timedelta(minutes=5)),
            child("f-old", "Failed", timedelta(hours=9)), child("f-streak", "Failed", timedelta(minutes=50)),
            child("running", "Running", timedelta(hours=8))]
    kids[-1]["status"].pop("completedAt")
    doomed = {d.name for d in beyond_history({"successfulHistoryLimit": 1, "failedHistoryLimit": 0}, kids, NOW.timestamp())}
    # ok-new is the one kept by the limit; ok-1 is over it and outside the horizon; f-streak is
    # newer than the last success and inside the horizon; nothing unfinished is ever touched
    assert doomed == {"ok-1", "ok-2", "ok-3", "f-old"}
    assert beyond_history({}, kids, NOW.timestamp()) == []  # no limits, no TTL: keep all


def test_ttl_only_for_manual_remediations() -> None:
    manual = child("m", "Succeeded", timedelta(seconds=30), ttlSecondsAfterFinished=10)
    manual["metadata"]["labels"] = {}
    young = child("y", "Failed", timedelta(seconds=5), ttlSecondsAfterFinished=10)
    young["metadata"]["labels"] = {}
    of_policy = child("c", "Succeeded", timedelta(seconds=30), ttlSecondsAfterFinished=10)
    assert [d.name for d in ttl_expired([manual, young, of_policy], NOW.timestamp(), "remedy.dev/policy")] == ["m"]
