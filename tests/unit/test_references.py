"""Docstrings and comments that point at a test or script name one that exists (they are how
a reader finds the proof of a claim; a stale pointer sends them nowhere)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POINTER = re.compile(r"\b((?:tests|scripts|bench|docs)/[\w./-]+\.(?:py|md|yaml|sh))\b")


def test_every_named_test_script_or_doc_exists() -> None:
    sources = [*(REPO / "operator" / "remedy").rglob("*.py"), *(REPO / "devenv" / "remedy_devenv").rglob("*.py")]
    missing = [f"{p.relative_to(REPO)}: {m}" for p in sources for m in POINTER.findall(p.read_text())
               if not (REPO / m).exists()]
    assert len(sources) > 40
    assert not missing, missing
