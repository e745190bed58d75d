"""bench/results/summary.json is assembled from the result files, never edited by hand: it must
equal what bench/summary.py builds from the committed JSON, hold every goal key of issue 16, and
give a reason for every figure that is null."""

from __future__ import annotations

import json
from pathlib import Path

from remedy_devenv.testkit import bench_module

REPO = Path(__file__).resolve().parents[2]


def test_summary_is_generated_and_complete() -> None:
    mod = bench_module("summary")
    built = mod.build()
    committed = json.loads((REPO / "bench" / "results" / "summary.json").read_text())
    assert committed == json.loads(json.dumps(built)), "stale: run .venv/bin/python bench/summary.py"
    for key in mod.KEYS:
        assert key in committed
        if committed[key] is None:
            assert committed["reasons"].get(key), f"{key} is null without a reason"
        else:
            assert committed["sources"][key]["file"], f"{key} has no source file"
