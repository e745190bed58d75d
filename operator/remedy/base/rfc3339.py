"""RFC 3339 timestamps as the Kubernetes API writes them: one parser, one formatter, one age.

Status fields, annotations and lock values all carry times as text; every module that reads
one parses it here, so "Z" vs "+00:00", a naive value (taken as UTC) and garbage (None, never
an exception) are handled the same way everywhere.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def parse(value: Any) -> datetime | None:
    """An aware datetime from an RFC 3339 / ISO 8601 string (or a datetime); None when
    missing or unparsable. Naive values are taken as UTC."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def epoch(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 value; None when missing or unparsable."""
    parsed = parse(value)
    return parsed.timestamp() if parsed else None


def age_seconds(value: Any, now: datetime | None = None) -> float | None:
    """Seconds elapsed since ``value``; None when missing or unparsable."""
    parsed = parse(value)
    if parsed is None:
        return None
    return ((now or datetime.now(timezone.utc)) - parsed).total_seconds()


def format_time(moment: datetime | float, *, ms: bool = False) -> str:
    """``2026-01-02T03:04:05Z`` (``.678Z`` with ``ms``) from a datetime or epoch seconds."""
    dt = datetime.fromtimestamp(moment, timezone.utc) if isinstance(moment, (int, float)) else moment
    dt = dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    if ms:
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return dt.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now(*, ms: bool = False) -> str:
    """The current time; ``ms`` for timelines that must order sub-second steps."""
    return format_time(datetime.now(timezone.utc), ms=ms)
