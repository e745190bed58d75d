"""Living beside Alertmanager: a silence while a child runs (spec.silence), and when a policy
must not start at all (spec.holdWhile: other alerts firing, a maintenance silence; spec.windows:
only inside given time windows).

Matchers use Alertmanager's own v2 shape (name, value, isRegex, isEqual), so what a person
writes in a policy is what they would type into amtool; values may use the policy's template
variables ({{ labels.x }}), rendered per firing.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from .common import ApiModel, Duration

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_RANGE = r"^(monday|tuesday|wednesday|thursday|friday|saturday|sunday)(:(monday|tuesday|wednesday|thursday|friday|saturday|sunday))?$"
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


class Matcher(ApiModel):
    """One Alertmanager matcher: label `name` equals (or, isRegex, fully matches) `value`;
    isEqual false negates it."""

    name: str = Field(min_length=1, max_length=256)
    value: str = Field(max_length=1024)
    is_regex: bool = False
    is_equal: bool = True

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.is_regex and "{{" not in self.value:  # templated values are checked by Alertmanager once rendered
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self.name}: not a valid regular expression: {exc}") from None
        return self


class SilenceSpec(ApiModel):
    """While a child of this policy runs, an Alertmanager silence for the alerts the action is
    expected to cause (a restart's own TargetDown, say); expired when the child ends, and at
    the latest after `duration`."""

    matchers: list[Matcher] = Field(min_length=1, max_length=32)
    duration: Duration = Field(default="15m", description="Upper bound; the silence is expired as soon as the child ends.")
    comment: str | None = Field(default=None, max_length=512)


class HoldWhile(ApiModel):
    """Do not start a child while any of these hold (each is checked against the live
    Alertmanager; if it cannot be asked, the start is held too: fail closed)."""

    alerts: list[list[Matcher]] = Field(default_factory=list, max_length=32,
                                        description="Hold while an active alert matches all matchers of any entry.")
    silenced: bool = Field(default=False, description="Hold while an active silence (not remedy's own) matches the firing alert's labels (maintenance).")


class TimeRange(ApiModel):
    start: str = Field(pattern=_CLOCK, description="HH:MM, inclusive.")
    end: str = Field(pattern=_CLOCK, description="HH:MM, exclusive; 24:00 for end of day.")


class Window(ApiModel):
    """A time window in Alertmanager's time_interval style: weekdays and clock ranges in a
    time zone. Empty weekdays means every day; empty times means all day."""

    weekdays: list[str] = Field(default_factory=list, max_length=7,
                                description="monday, or ranges such as monday:friday.")
    times: list[TimeRange] = Field(default_factory=list, max_length=24)
    time_zone: str = Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Berlin.")

    @field_validator("weekdays")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        for d in days:
            if not re.match(_DAY_RANGE, d):
                raise ValueError(f"weekday {d!r}: use monday..sunday or a range such as monday:friday")
        return days

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

