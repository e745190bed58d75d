"""Issue 20 item 7: the redaction index stays linear and bounded, and refuses values over the
cap. The measured figures (1 MiB Secret, RSS against the chart's limit) are in
tests/security/test_redaction_bound.py."""

from __future__ import annotations

import pytest

from remedy.base import redaction
from remedy.base.redaction import MAX_SECRET_BYTES, IndexFullError, Redactor, SecretTooLargeError


def test_register_refuses_a_value_over_the_cap_without_quoting_it() -> None:
    r = Redactor()
    value = "S3CRET" * (MAX_SECRET_BYTES // 6 + 1)
    with pytest.raises(SecretTooLargeError) as err:
        r.register(value)
    assert "S3CRET" not in str(err.value) and str(MAX_SECRET_BYTES) in str(err.value)
    assert r.fragments() == 0


def test_the_index_grows_linearly_with_the_value() -> None:
    """Fragments per byte stay bounded whatever the value (the old index grew with ~40
    encodings per value and was rebuilt for every value registered)."""
    for unit in ("aZ09+/", "\x01\x02\x1f\x7f", "漢字仮名"):
        sizes: dict[int, int] = {}
        for n in (1024, 4096):
            r = Redactor()
            value = (unit * n)[:n]
            # Unrepetitive: a counter makes every 8-window distinct, the worst case for a set.
            value = "".join(f"{c}{i % 10}" for i, c in enumerate(value))[:n]
            r.register(value)
            sizes[n] = r.fragments()
            assert r.fragments() <= 40 * len(value.encode()), (unit, n, r.fragments())
        assert sizes[4096] <= 4.5 * sizes[1024], (unit, sizes)


def test_adding_a_value_does_not_rebuild_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Redactor()
    rebuilds: list[int] = []
    original = r._rebuild
    monkeypatch.setattr(r, "_rebuild", lambda: (rebuilds.append(1), original())[1])
    for i in range(50):
        r.register(f"value-number-{i:04d}-secret")
    assert rebuilds == []
    assert "value-number-0007-secret" not in r.redact("x value-number-0007-secret y")


def test_over_budget_evicts_only_values_not_read_recently(monkeypatch: pytest.MonkeyPatch) -> None:
    first = "first-secret-" + "a1b2c3d4" * 10
    room = len(redaction.index_of(first)[0])
    r = Redactor(max_fragments=room + 10)
    r.register(first)
    with pytest.raises(IndexFullError):
        r.register("second-secret-" + "e5f6g7h8" * 10)  # the first was read just now: fail closed
    monkeypatch.setattr(redaction, "EVICT_AFTER_S", 0.0)
    r.register("second-secret-" + "e5f6g7h8" * 10)
    assert "second-secret" not in r.redact("second-secret-" + "e5f6g7h8" * 10)
    assert r.redact("first-secret-a1b2c3d4a1b2") == "first<redacted>a1b2c3d4a1b2"  # evicted: only "-secret-" (shared) still masked
