"""Test-only fault injection: sleeps at named points of the lifecycle so a test can SIGKILL
the operator there (REMEDY_FAULT_INJECT; the chart never sets it)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..api.objects import view
from ..base.constants import ANN_FAULT_INJECT

log = logging.getLogger("remedy")


def fault_injection_hooks(spec: str) -> dict[str, Any]:
    """Test-only: ``after_intent:30,after_action:30`` sleeps at those points so a test can
    SIGKILL the operator there. Empty in production (the chart never sets it)."""
    hooks: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        point, _, seconds = item.partition(":")

        async def sleep(obj: dict[str, Any], _s: float = float(seconds or 30)) -> None:
            if view(obj).annotations.get(ANN_FAULT_INJECT) == "true":
                log.warning("fault injection: sleeping %ss", _s)
                await asyncio.sleep(_s)

        hooks[point] = sleep
    return hooks
