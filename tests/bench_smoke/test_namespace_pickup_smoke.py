"""Smoke test of bench/namespace_pickup.py (issue 21): 8 namespaces matching the operator's glob,
created while it starts and right after it is ready, each with a Remediation. Every one must be
picked up, and the p99 from namespace creation to Accepted stays within 5 s (it was up to 60 s
when kopf's namespace watch dropped its own listing: remedy/runtime/namespaces.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "namespace_pickup.py"


def test_namespace_pickup_within_seconds(tmp_path: Path) -> None:
    out = tmp_path / "namespace-pickup.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "-n", "8", "--timeout", "60", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    assert data["notPickedUpWithin"]["namespaces"] == [], data
    assert data["pickedUp"] == 8
    assert data["namespace_pickup_p99_s"] is not None and data["namespace_pickup_p99_s"] <= 5.0, data
    assert proc.returncode == 0
