"""remedy/base/malloc.py on this machine's glibc: the arena cap and the trim really reach the C
library (a missing symbol or a failed call returns False; the operator then runs unchanged)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from remedy.base import malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only (musl has no mallopt)")
def test_arena_cap_and_trim_reach_glibc() -> None:
    # In a fresh process, as the operator does before its worker threads start.
    code = "from remedy.base import malloc; print(malloc.limit_arenas(2), malloc.trim(), malloc.limit_arenas(0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]  # 0 arenas is refused, not applied
    assert malloc.trim() is True
