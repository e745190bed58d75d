"""A thin typed view over a Remediation or RemediationPolicy body as the API server sends it.

Why a module: both houses (lifecycle/, policies/) and the runtime read whole objects as dicts
(from watches and GETs; a body is passed on and patched unchanged, and the pydantic models
validate specs, not whole objects). The view names the few fields they read, so
``(obj.get("status") or {}).get("phase")`` is spelled once, here, with the same meaning: a
missing section reads as empty, never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..base.constants import FINAL_PHASES


@dataclass(frozen=True, slots=True)
class View:
    """Read-only accessors over one body; the dicts returned are the body's own (not copies)."""

    body: Mapping[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.body.get("metadata") or {}

    @property
    def phase(self) -> str | None:
        phase = self.status.get("phase")
        return None if phase is None else str(phase)

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels") or {}

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return self.status.get("conditions") or []

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.get("annotations") or {}

    def is_final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def status(self) -> dict[str, Any]:
        return self.body.get("status") or {}


def view(body: Mapping[str, Any]) -> View:
    return View(body)
