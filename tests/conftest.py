"""Test session wiring: fixtures live in tests/fixtures/* as pytest plugins.

Under CI (``CI=true``) a skipped test fails the run: a test that did not run proves nothing,
and a missing tool must be installed by the project's scripts, not skipped past. The skipped
tests and their reasons are listed at the end of the run either way.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.services",
    "tests.fixtures.operator",
    "tests.fixtures.node",
    "tests.fixtures.argocd",
]


_SKIPPED: list[tuple[str, str]] = []


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _record_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _SKIPPED.append((report.nodeid, reason))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _ci() and _SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _SKIPPED:
        return
    verdict = "FAIL (CI=true: skipped tests fail the run)" if _ci() else "skipped (would fail under CI=true)"
    terminalreporter.section(f"{len(_SKIPPED)} skipped test(s): {verdict}", sep="=", red=_ci())
    for nodeid, reason in _SKIPPED:
        terminalreporter.write_line(f"SKIPPED {nodeid}: {reason}")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests run first: they are fast (a broken build fails in seconds), and the checks that the
    committed docs match the committed bench/results JSON must see the JSON before the
    reliability and security suites of the same run rewrite it with fresh figures."""
    items.sort(key=lambda item: 0 if "tests/unit/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("unit/") else 1)
