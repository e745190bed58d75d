"""The typed view over object bodies (remedy.api.objects) and the phase sets spelled once
(remedy.base.constants): a missing section reads as empty, the view returns the body's own
dicts, and no module outside constants.py spells a phase set by hand."""

from __future__ import annotations

import re
from pathlib import Path

from remedy.api.objects import view
from remedy.base.constants import FINAL_PHASES, NOT_STARTED_PHASES

REPO = Path(__file__).resolve().parents[2]


def test_missing_sections_read_as_empty() -> None:
    v = view({})
    assert (v.metadata, v.labels, v.annotations, v.status, v.conditions) == ({}, {}, {}, {}, [])
    assert v.phase is None and not v.is_final()
    nulls = view({"metadata": {"labels": None, "annotations": None}, "status": {"conditions": None, "phase": None}})
    assert (nulls.labels, nulls.annotations, nulls.conditions, nulls.phase) == ({}, {}, [], None)
    assert view({"metadata": None, "status": None}).annotations == {}


def test_fields_are_the_bodys_own() -> None:
    body = {"metadata": {"name": "r", "namespace": "n", "labels": {"a": "1"}, "annotations": {"b": "2"}},
            "spec": {"dryRun": True},
            "status": {"phase": "Failed", "conditions": [{"type": "Completed", "status": "True", "reason": "X"}]}}
    v = view(body)
    assert (v.metadata["name"], v.labels, v.annotations) == ("r", {"a": "1"}, {"b": "2"})
    assert v.phase == "Failed" and v.is_final()
    assert v.conditions == [{"type": "Completed", "status": "True", "reason": "X"}]
    assert v.labels is body["metadata"]["labels"] and v.status is body["status"]
    assert not view({"status": {"phase": "Running"}}).is_final()


def test_phase_sets() -> None:
    assert {"Succeeded", "Failed", "Skipped"} == FINAL_PHASES
    assert {"Pending", "AwaitingApproval"} == NOT_STARTED_PHASES
    assert not FINAL_PHASES & NOT_STARTED_PHASES


def test_phase_sets_are_spelled_only_in_constants() -> None:
    """A hand-written set of final (or not started) phases drifts from the one in constants.py."""
    by_hand = re.compile(r"""["']Succeeded["'],\s*["']Failed["'],\s*["']Skipped["']|["']Pending["'],\s*["']AwaitingApproval["']\s*[)}\]]""")
    sources = [*(REPO / "operator" / "remedy").rglob("*.py"), *(REPO / "devenv" / "remedy_devenv").rglob("*.py")]
    offenders = [f"{p.relative_to(REPO)}: {line.strip()}" for p in sources if p.name != "constants.py"
                 for line in p.read_text().splitlines()
                 if by_hand.search(line) and "Literal[" not in line]  # the enum of every phase is the schema's
    assert not offenders, offenders
