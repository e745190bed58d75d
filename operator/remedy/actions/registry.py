"""The explicit registry: ``spec.action`` member name -> ActionDef.

No import-time discovery: adding an action means adding one line here (and its params
model to remedy.api.remediation.ActionSpec); tests/unit/test_registry.py checks both agree.
"""

from __future__ import annotations

from typing import Any

from . import workload
from .base import ActionDef

_ALL: list[ActionDef[Any]] = [
    workload.RESTART,
    workload.SCALE,
    workload.ROLLBACK,
    workload.RAISE_MEMORY,
]

REGISTRY: dict[str, ActionDef[Any]] = {a.name: a for a in _ALL}


def get(name: str) -> ActionDef[Any]:
    return REGISTRY[name]
