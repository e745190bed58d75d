"""Smoke test of bench/alert_latency.py: the benchmark runs end to end on its own control plane
(or on REMEDY_KUBECONFIG's cluster) and produces sane numbers. Not a timed test: nothing here
asserts on speed, only that every alert produced a Remediation that started and that the
figures are finite. The sizes are the smallest that still exercise every phase: 20 alerts at the
bench's default 5/s (each phase paced, warm-up included) and a 200-alert storm, two alerts per
fingerprint, so deduplication to exactly 100 children is still asserted (the bench's --quick
100/1,000 took ~70 s for the same assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "alert_latency.py"
ALERTS = 20
STORM = 200  # a multiple of the bench's batch (50), two alerts for each of its 100 fingerprints
BATCH = 50


def test_alert_latency_quick_completes_with_sane_numbers(tmp_path: Path) -> None:
    out = tmp_path / "alert_latency.json"
    cmd = [sys.executable, str(SCRIPT), "--alerts", str(ALERTS), "--storm", str(STORM), "--out", str(out), "--max-seconds", "480"]
    if os.environ.get("REMEDY_KUBECONFIG"):
        cmd += ["--kubeconfig", os.environ["REMEDY_KUBECONFIG"]]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=540)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"benchmark did not finish in 540s; stderr tail:\n{(exc.stderr or b'')[-3000:]!r}")
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-4000:]}"
    summary = json.loads(out.read_text())
    assert "error" not in summary, summary["error"]
    assert all(summary["checks"].values()), summary["checks"]

    lat = summary["latency"]
    detail = lat["remedy_detail"]
    # An answer after the webhook's budget reports the alert as queued; "started" checks it too.
    assert detail["sent"] == ALERTS
    assert detail["outcomes"].get("created", 0) + detail["outcomes"].get("queued", 0) == ALERTS, detail["outcomes"]
    assert detail["started"] == ALERTS, "every alert's Remediation must have started its action"
    assert lat["remedy"]["n"] == ALERTS and lat["baseline"]["n"] == ALERTS
    for side in ("remedy", "baseline"):
        for key in ("p50", "p90", "p99", "max"):
            value = lat[side][key]
            assert math.isfinite(value) and value >= 0, (side, key, value)
        assert lat[side]["p50"] <= lat[side]["p99"] <= lat[side]["max"]
    for key in ("p50", "p99"):
        assert math.isfinite(lat["ratio"][key]) and lat["ratio"][key] > 0

    storm = summary["storm"]
    assert storm["remedy"]["alerts"] == STORM and storm["remedy"]["codes"] == {"200": STORM // BATCH}
    # The webhook answers within its budget and may report work as queued; the LIST decides.
    outcomes = storm["remedy"]["outcomes"]
    assert sum(outcomes.values()) == STORM and not any(k.startswith("error") for k in outcomes), outcomes
    assert outcomes.get("created", 0) <= 100
    assert storm["children_created"] == 100
    assert storm["remedy"]["answer_s"]["n"] == STORM // BATCH
    assert storm["remedy"]["alerts_per_s"] > 0 and storm["noop"]["alerts_per_s"] > 0
    assert math.isfinite(storm["ratio"]) and storm["ratio"] > 0
