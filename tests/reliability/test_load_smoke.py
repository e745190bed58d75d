"""Load smoke: bench/load.py at CI size (200 Remediations with `notify`, 50 policies) against
the session control plane. Asserts every Remediation completed and the operator's peak RSS
(VmHWM) stayed under 250 MiB; records throughput and the ratio to a plain-client baseline.
The full 2,000 + 500 run is `.venv/bin/python bench/load.py` (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from remedy_devenv.cluster import ControlPlane
from tests.fixtures.operator import REPO

from ._util import record

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.timeout(400)]

N, P = 200, 50
RSS_LIMIT_MIB = 250.0


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("remedy_bench_load", REPO / "bench" / "load.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_load_smoke_completes_all_within_memory_budget(control_plane: ControlPlane, crds: None, tmp_path: Path) -> None:
    result = _bench().run_load(control_plane.admin_kubeconfig, N, P, tmp_path, timeout=240)
    record("load-smoke", result)
    assert result["completed"] == N, result
    assert result["phases"] == {"Succeeded": N}, result
    assert result["operatorAlive"]
    assert result["peakRssMiB"] < RSS_LIMIT_MIB, result
