"""The figure tables of docs/reliability.md and docs/benchmarks.md are what bench/render.py
generates from the committed bench/results/*.json: a hand-edited or stale figure fails here."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from remedy_devenv.testkit import bench_module

REPO = Path(__file__).resolve().parents[2]


def _render() -> ModuleType:
    return bench_module("render")


def test_committed_docs_match_committed_results() -> None:
    render = _render()
    assert render.stale() == [], "run .venv/bin/python bench/render.py and commit the docs"


def test_every_results_file_is_rendered_somewhere() -> None:
    render = _render()
    docs = "".join(p.read_text() for p in render.DOCS.values())
    names = {m.group("name") for m in render.MARK.finditer(docs)}
    for path in (REPO / "bench" / "results").glob("reliability-*.json"):
        assert path.stem.removeprefix("reliability-") in names, f"{path.name} has no generated block in the docs"


def test_a_changed_figure_changes_the_doc(tmp_path: Path) -> None:
    """The check can fail: a different figure in the JSON gives a different doc."""
    render = _render()
    results = REPO / "bench" / "results"
    for path in results.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    ha = json.loads((tmp_path / "reliability-ha.json").read_text())
    ha["lost"] = 12345
    (tmp_path / "reliability-ha.json").write_text(json.dumps(ha))
    doc = render.DOCS["reliability"].read_text()
    assert render.render(doc, tmp_path) != doc
    assert "12,345" in render.render(doc, tmp_path)
