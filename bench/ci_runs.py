#!/usr/bin/env python3
"""Record a fresh-clone CI run (issue 21 item 7) into bench/results/ci-runs.json from its logs.

Why: docs/reliability.md's table of consecutive CI runs is generated from JSON like every other
figure, and the JSON is read off what the run itself printed (`.ci/run`'s first line and its
"[ci] done in" line, the shard runner's verdict) and the ci-pytest.json it wrote, never typed in.

    .venv/bin/python bench/ci_runs.py RUN_ID CI_LOG RESULTS_DIR    # RESULTS_DIR: the run's REMEDY_RESULTS_DIR
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "ci-runs.json"


def parse(log: str, results: Path) -> dict[str, object]:
    started = re.search(r"^\[ci\] (\S+) on (\d+) cores", log, re.M)
    done = re.search(r"^\[ci\] done in (\d+)s", log, re.M)
    pytest_run = json.loads((results / "ci-pytest.json").read_text())
    failed = sorted(set(re.findall(r"^_{3,} (test\S+) _{3,}$", log, re.M)))
    ci_seconds: float | None = float(done.group(1)) if done else None
    if ci_seconds is None and started:  # a failing run stops before .ci/run's last line
        ci_seconds = round((datetime.fromisoformat(pytest_run["recordedAt"].replace("Z", "+00:00"))
                            - datetime.fromisoformat(started.group(1).replace("Z", "+00:00"))).total_seconds())
    return {"commit": str(pytest_run["commit"])[:12], "startedAt": started.group(1) if started else None,
            "cores": int(started.group(2)) if started else None, "ciRunSeconds": ci_seconds,
            "pytestWallSeconds": pytest_run["ci_pytest_seconds"], "shards": pytest_run["shards"],
            "result": "passed" if pytest_run["passed"] else "failed", "failedTests": ", ".join(failed) or "-"}


def main(argv: list[str]) -> int:
    run_id, log, results = argv[1], Path(argv[2]).read_text(), Path(argv[3])
    data = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
    data["runs"][run_id] = parse(log, results)
    data["command"] = "CI=true bash .ci/run on a fresh clone of main (builds cached in ~/.cache/remedy), then bench/ci_runs.py"
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
