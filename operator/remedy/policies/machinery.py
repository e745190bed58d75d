"""RemediationPolicy: turn a firing into at most one guarded child Remediation, and turn the
children's outcomes into pause, degradation and escalation.

``Policies`` is the two paths over one shared state: fire.py (firing -> child, dedup,
episodes, guards, resolve) and refresh.py (status from children, self-pause, autonomy,
escalation), both on memory.py (watch-fed caches, counters, the one status writer).
"""

from __future__ import annotations

from .fire import FirePath
from .refresh import RefreshPath


class Policies(FirePath, RefreshPath):
    """The policy machinery of one process (the triggers fire into it, the runtime refreshes it)."""
