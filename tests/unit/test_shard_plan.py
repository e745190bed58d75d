"""The split of the suite into concurrent pytest sessions (tests/shard_plan.py, tests/shard_run.py):
every test file runs exactly once, the unit tests lead shard 0, all real-node tests share one
shard, and the runner fails when any shard fails and lists every shard's skips."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests import shard_plan, shard_run
from tests.shard_plan import REAL_NODE, REPO, SECONDS, collected_files, estimate, plan

# What makes a test file use the real node: tests/fixtures/node.py's fixtures, or the demo.
NODE_FIXTURES = {"node", "node_cluster", "node_admin", "node_operator", "node_namespace"}
NODE_MARKERS = re.compile(r"remedy_devenv\.(demo|node)(?!\w)|real_node=True|scripts/demo(?!\w)")


def uses_real_node(path: Path) -> bool:
    text = path.read_text()
    if NODE_MARKERS.search(text):
        return True
    for fn in ast.walk(ast.parse(text)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and NODE_FIXTURES & {a.arg for a in fn.args.args + fn.args.kwonlyargs}:
            return True
    return any(f'"{name}"' in text and "usefixtures" in text for name in NODE_FIXTURES)


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_every_test_file_runs_in_exactly_one_shard(shards: int) -> None:
    files = collected_files()
    split = plan(files, shards)
    assert len(split) == shards
    flat = [f for s in split for f in s]
    assert sorted(flat) == files and len(set(flat)) == len(flat)
    assert plan(list(reversed(files)), shards) == split, "the split must not depend on listing order"


def test_collected_files_are_what_pytest_collects() -> None:
    files = collected_files()
    assert "tests/unit/test_shard_plan.py" in files and "tests/e2e/test_real_node.py" in files
    assert not [f for f in files if "/fixtures/" in f]


def test_unit_tests_all_lead_shard_zero() -> None:
    files = collected_files()
    unit = {f for f in files if f.startswith("tests/unit/")}
    split = plan(files, 2)
    assert unit <= set(split[0])
    assert not unit & set(split[1])


def test_every_real_node_test_file_is_listed_and_they_share_one_shard() -> None:
    files = collected_files()
    using = {f for f in files if not f.startswith("tests/unit/") and uses_real_node(REPO / f)}
    assert using, "the scan finds nothing: it no longer detects the real-node fixtures"
    assert using <= set(REAL_NODE), f"add to tests/shard_plan.py REAL_NODE: {sorted(using - set(REAL_NODE))}"
    for shards in (2, 3, 4):
        holding = [i for i, s in enumerate(plan(files, shards)) if set(REAL_NODE) & set(s)]
        assert len(holding) == 1, (shards, holding)


def test_timing_table_names_existing_files_and_the_shards_balance() -> None:
    files = collected_files()
    assert set(SECONDS) <= set(files), f"stale entries: {sorted(set(SECONDS) - set(files))}"
    for shards in sorted({2, shard_run.DEFAULT_SHARDS}):
        loads = [estimate(s) for s in plan(files, shards)]
        assert max(loads) <= 1.15 * min(loads), (shards, loads)


def test_one_session_when_a_cluster_is_shared_or_committed_figures_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMEDY_KUBECONFIG", raising=False)
    monkeypatch.setenv("REMEDY_RESULTS_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("REMEDY_TEST_SHARDS", "3")
    assert shard_run.shard_count() == (3, "")
    monkeypatch.setenv("REMEDY_RESULTS_DIR", str(REPO / "bench" / "results"))
    assert shard_run.shard_count()[0] == 1
    monkeypatch.setenv("REMEDY_RESULTS_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("REMEDY_KUBECONFIG", "/tmp/admin.kubeconfig")
    assert shard_run.shard_count()[0] == 1


def test_report_fails_if_any_shard_fails_and_lists_every_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = shard_run.Shard(0, ["tests/unit/test_a.py"], tmp_path / "0.log", rc=0)
    ok.log.write_text("....\nSKIPPED tests/unit/test_a.py::t: no tool\n3 passed, 1 skipped in 1s\n")
    bad = shard_run.Shard(1, ["tests/e2e/test_b.py"], tmp_path / "1.log", rc=1)
    bad.log.write_text("F\n" + "".join(f"detail {i}\n" for i in range(200)) + "1 failed in 2s\n")
    assert shard_run.report([ok, bad], 3.0) == 1
    out = capsys.readouterr().out
    assert "SKIPPED tests/unit/test_a.py::t: no tool" in out.split("all shards")[1]
    tail = out.split("shard 1 FAILED")[1]
    assert "detail 199" in tail and "1 failed in 2s" in tail and "detail 100" not in tail
    assert out.rstrip().endswith("wall 3s for 2 concurrent shards") and "FAILED: shard(s) 1" in out
    assert shard_run.report([ok], 1.0) == 0


def test_plan_rejects_zero_shards() -> None:
    with pytest.raises(ValueError):
        shard_plan.plan(["tests/unit/test_x.py"], 0)
