"""Smoke test of bench/memory.py: on its own control plane, with a few policies and
Remediations, the benchmark runs end to end, every Remediation reaches a final phase, and the
RSS readings are real numbers. Not a timed or sized test: the 10,000 + 1,000 run is a
documented command (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def test_memory_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "memory.py"), "-n", "100", "-p", "10", "--step", "50",
                           "--settle", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    steps = [r["step"] for r in data["readings"]]
    assert steps == ["idle", "policies", "remediations-50", "remediations-100"]
    assert all(0 < r["rss_mib"] < 4096 for r in data["readings"])
    assert data["estimated"] is True and data["note"]
