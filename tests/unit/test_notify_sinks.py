"""Every sink format, including oversized messages, passes the receiver-side validation of
that format (remedy_devenv.notify_receiver, written from the services' API docs)."""

from __future__ import annotations

import json

import pytest

from remedy.actions.notify_sinks import build
from remedy_devenv.notify_receiver import NotifyReceiver

PD_KEY = "a" * 32
RECEIVER = NotifyReceiver("T0/B0/xyz", PD_KEY, "og-key", "teams-token", port=0)
DETAILS = {"remediation": "r1", "namespace": "ns", "uid": "u"}


@pytest.mark.parametrize("message", ["disk full on db-1", "x" * 50_000])
@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_each_format_is_valid_for_its_receiver(message: str, severity: str) -> None:
    for fmt in ("slack", "pagerduty", "opsgenie", "teams", "generic"):
        key = {"pagerduty": PD_KEY, "opsgenie": "og-key"}.get(fmt)
        body, headers = build(fmt, message, severity, "remedy/ns/r1", "remedy/ns", DETAILS, key=key)
        errors: list[str] = []
        raw = json.dumps(body).encode()
        if fmt == "slack":
            RECEIVER._slack(body, errors)
        elif fmt == "pagerduty":
            RECEIVER._pagerduty(body, errors)
        elif fmt == "opsgenie":
            assert RECEIVER._opsgenie(body, headers, errors) is None
        elif fmt == "teams":
            RECEIVER._teams(body, raw, errors)
        else:
            assert headers["Idempotency-Key"] == "remedy/ns/r1" and body["text"] == message
        assert errors == [], (fmt, errors)


def test_dedup_fields_carry_the_key() -> None:
    pd, _ = build("pagerduty", "m", "critical", "k-1", "s", DETAILS, key=PD_KEY)
    og, og_headers = build("opsgenie", "m", "critical", "k-1", "s", DETAILS, key="og-key")
    assert pd["dedup_key"] == "k-1" and pd["payload"]["severity"] == "critical"
    assert og["alias"] == "k-1" and og["priority"] == "P1" and og_headers["Authorization"] == "GenieKey og-key"
