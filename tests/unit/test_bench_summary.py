"""bench/results/summary.json is assembled from the result files, never edited by hand: it must
equal what bench/summary.py builds from the committed JSON, hold every goal key of issue 16, and
give a reason for every figure that is null."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_summary_is_generated_and_complete() -> None:
    spec = importlib.util.spec_from_file_location("remedy_bench_summary", REPO / "bench" / "summary.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = mod.build()
    committed = json.loads((REPO / "bench" / "results" / "summary.json").read_text())
    assert committed == json.loads(json.dumps(built)), "stale: run .venv/bin/python bench/summary.py"
    for key in mod.KEYS:
        assert key in committed
        if committed[key] is None:
            assert committed["reasons"].get(key), f"{key} is null without a reason"
        else:
            assert committed["sources"][key]["file"], f"{key} has no source file"
