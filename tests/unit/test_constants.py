"""Each shared name is spelled once: the group string and every label/annotation name appear
in operator/remedy only in remedy/base/constants.py; the one timestamp helper parses what the
API server and users write."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import remedy
from remedy.base import constants, rfc3339

PACKAGE = Path(remedy.__file__).resolve().parent
# Every label and annotation constant, found by prefix: a new one is covered without a list to update.
NAMES = (constants.GROUP, constants.OPERATOR_APP_NAME,
         *(value for key, value in sorted(vars(constants).items()) if key.startswith(("LABEL_", "ANN_")) and isinstance(value, str)))


def _sources() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "constants.py"]


@pytest.mark.parametrize("name", NAMES)
def test_name_is_spelled_only_in_constants(name: str) -> None:
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in _sources()
                 for n, line in enumerate(p.read_text().splitlines(), 1) if name in line]
    assert not offenders, f"{name!r} spelled outside remedy/base/constants.py: {offenders}"


def test_the_grep_would_see_a_stray_literal() -> None:
    # The scan reads every module, including ones in sub-packages: a literal there is found.
    assert len(_sources()) > 20 and any(p.parent != PACKAGE for p in _sources())
    assert constants.GROUP in (PACKAGE / "base" / "constants.py").read_text()
    assert {constants.ANN_APPROVED_BY, constants.LABEL_POLICY, constants.ANN_RESTARTED_BY} <= set(NAMES)


def test_remedy_reexports_group_and_version() -> None:
    assert (remedy.GROUP, remedy.VERSION) == (constants.GROUP, constants.VERSION)
    assert f"{remedy.GROUP}/{remedy.VERSION}" == constants.API_VERSION


@pytest.mark.parametrize("text", ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05z", "2026-01-02T03:04:05+00:00",
                                  "2026-01-02T04:04:05+01:00", "2026-01-02T03:04:05", " 2026-01-02T03:04:05Z "])
def test_parse_reads_every_spelling_as_the_same_instant(text: str) -> None:
    assert rfc3339.parse(text) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("junk", [None, "", "yesterday", "2026-13-01T00:00:00Z", True, 17])
def test_parse_returns_none_for_junk(junk: object) -> None:
    assert rfc3339.parse(junk) is None
    assert rfc3339.epoch(junk) is None and rfc3339.age_seconds(junk) is None


def test_format_round_trips_and_age_counts_forward() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone.utc)
    assert rfc3339.format_time(moment) == "2026-01-02T03:04:05Z"
    assert rfc3339.format_time(moment, ms=True) == "2026-01-02T03:04:05.678Z"
    assert rfc3339.format_time(moment.timestamp()) == "2026-01-02T03:04:05Z"
    assert rfc3339.parse(rfc3339.format_time(moment, ms=True)) == moment
    assert rfc3339.age_seconds(rfc3339.format_time(moment), now=moment + timedelta(seconds=90)) == pytest.approx(90.678)
    now = rfc3339.now(ms=True)
    assert now.endswith("Z") and 0 <= (rfc3339.age_seconds(now) or 0) < 5


def test_timestamps_are_parsed_only_by_rfc3339() -> None:
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in _sources() if p.name != "rfc3339.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "fromisoformat(" in line]
    assert not offenders, f"parse timestamps with remedy.base.rfc3339 (parse/epoch/age_seconds), not here: {offenders}"
