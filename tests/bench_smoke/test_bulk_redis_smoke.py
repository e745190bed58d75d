"""Smoke test of bench/bulk_redis.py: the benchmark runs end to end at 20,000 keys on its own
redis-server and its server-side checks hold (every stale record purged, the prefix emptied, the
other records kept). Not a timed test: nothing here asserts on speed; the full 1,000,000-key run
is a documented command (docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "bulk_redis.py"


def test_bulk_redis_smoke_completes_with_server_checks(tmp_path: Path) -> None:
    out = tmp_path / "bulk-redis.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--seed", "7", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    assert data["n"] == 20_000 and data["seed"] == 7
    assert data["checks"] and all(data["checks"].values()), data["checks"]
    for part in ("purge", "prefix_delete"):
        d = data[part]
        assert math.isfinite(d["ratio_vs_floor"]) and d["ratio_vs_floor"] > 0
        assert 0 < d["peak_rss_mib"] < 1024
        assert d["max_status_bytes"] < 64 * 1024
    assert data["purge"]["remedy_runs"][0]["acted"] == data["stale"]
