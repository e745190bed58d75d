"""Load smoke: bench/load.py at CI size (200 Remediations with `notify`, 50 policies) against
the session control plane. Asserts every Remediation completed and the operator's peak RSS
(VmHWM) stayed under 250 MiB; records throughput and the ratio to a plain-client baseline.
The full 2,000 + 500 run is `.venv/bin/python bench/load.py` (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.testkit import bench_module

from ._util import record

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.timeout(400)]

N, P = 200, 50
RSS_LIMIT_MIB = 250.0


def test_load_smoke_completes_all_within_memory_budget(control_plane: ControlPlane, crds: None, tmp_path: Path) -> None:
    result = bench_module("load").run_load(control_plane.admin_kubeconfig, N, P, tmp_path, timeout=240)
    record("load-smoke", result)
    assert result["completed"] == N, result
    assert result["phases"] == {"Succeeded": N}, result
    assert result["operatorAlive"]
    assert result["peakRssMiB"] < RSS_LIMIT_MIB, result
