"""spec.windows (weekdays, clock ranges, time zones), Alertmanager matcher semantics and the
silence annotation a child carries."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from remedy.api.holds import SilenceSpec, Window
from remedy.clients.alertmanager import matches
from remedy.policies.holds import in_window, silence_annotation

# Monday 2026-11-30 08:30 UTC = 09:30 in Berlin (CET) = 17:30 in Tokyo.
MONDAY = datetime(2026, 11, 30, 8, 30, tzinfo=timezone.utc)


def window(**kw: object) -> Window:
    return Window.model_validate(kw)


def test_window_weekdays_times_and_time_zone() -> None:
    assert in_window(window(), MONDAY)
    assert in_window(window(weekdays=["monday:friday"], times=[{"start": "09:00", "end": "17:00"}], timeZone="Europe/Berlin"), MONDAY)
    assert not in_window(window(weekdays=["monday:friday"], times=[{"start": "09:00", "end": "17:00"}], timeZone="UTC"), MONDAY)
    assert not in_window(window(times=[{"start": "09:00", "end": "17:00"}], timeZone="Asia/Tokyo"), MONDAY)  # 17:30 there
    assert in_window(window(times=[{"start": "17:00", "end": "24:00"}], timeZone="Asia/Tokyo"), MONDAY)
    assert not in_window(window(weekdays=["saturday:sunday"]), MONDAY)
    assert in_window(window(weekdays=["saturday:monday"]), MONDAY)  # wraps the week


@pytest.mark.parametrize("bad", [{"timeZone": "Mars/Olympus"}, {"weekdays": ["funday"]}, {"times": [{"start": "9:00", "end": "17:00"}]},
                                 {"times": [{"start": "09:00", "end": "25:00"}]}])
def test_bad_windows_are_rejected_with_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as err:
        Window.model_validate(bad)
    assert err.value.errors()[0]["loc"][0] in ("timeZone", "time_zone", "weekdays", "times")


def test_matcher_semantics_follow_alertmanager() -> None:
    labels = {"alertname": "TargetDown", "instance": "db-1"}
    assert matches([{"name": "alertname", "value": "TargetDown"}], labels)
    assert matches([{"name": "instance", "value": "db-.*", "isRegex": True}], labels)
    assert not matches([{"name": "instance", "value": "db", "isRegex": True}], labels)  # anchored
    assert not matches([{"name": "instance", "value": "db-1", "isEqual": False}], labels)
    assert matches([{"name": "missing", "value": ""}], labels)  # absent label = empty string
    assert not matches([{"name": "alertname", "value": "TargetDown"}, {"name": "instance", "value": "db-2"}], labels)


def test_silence_annotation_renders_matchers_or_carries_the_error() -> None:
    spec = SilenceSpec.model_validate({"matchers": [{"name": "instance", "value": "{{ labels.instance }}"}], "duration": "10m"})
    out = json.loads(silence_annotation(spec, {"labels": {"instance": "db-1"}}))
    assert out["matchers"] == [{"name": "instance", "value": "db-1", "isRegex": False, "isEqual": True}]
    assert out["durationSeconds"] == 600
    err = json.loads(silence_annotation(spec, {"labels": {}}))
    assert "error" in err and "instance" in err["error"]
    with pytest.raises(ValidationError):
        SilenceSpec.model_validate({"matchers": [{"name": "x", "value": "(", "isRegex": True}]})
    assert SilenceSpec.model_validate({"matchers": [{"name": "x", "value": "("}]})  # not a regex: any text
