"""Smoke test of bench/database_status.py: at 50 real PostgreSQL backends and 1,000 planned
identities the benchmark runs end to end, its server-side checks hold (every planned backend
stopped, late and other backends untouched; the double killed exactly the planned ops) and the
status of both actions stays under 64 KiB. Not a timed test; the 10,000-identity run is a
documented command (docs/scale.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def test_database_status_smoke(tmp_path: Path) -> None:
    out = tmp_path / "database-status.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "database_status.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    assert data["identities"] == 1_000 and data["postgres_real"]["backends"] == 50
    assert data["checks"] and all(data["checks"].values()), data["checks"]
    assert 0 < data["postgres_status_bytes_10k"] < 64 * 1024 and 0 < data["mongo_status_bytes_10k"] < 64 * 1024
    assert data["postgres_real"]["status_bytes"] < 64 * 1024
    # listing every identity is what the bounded evidence replaces: it grows with the count
    assert data["postgres_synthetic"]["full_listing_status_bytes"] > 10 * data["postgres_status_bytes_10k"]
