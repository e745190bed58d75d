"""Markers of the reliability suite (registered here so the suite runs alone without warnings)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: reliability suite (tests/reliability, issue 8)")
    config.addinivalue_line("markers", "slow: takes more than a minute; sizes kept modest for CI")
