"""Issue 20 item 7: the redaction index stays linear and bounded, and a 1 MiB Secret is refused.

The figures come from a fresh Python process (``_MEASURE``) so the peak RSS (VmHWM) is that of
the work measured, not of pytest: it imports remedy, reads a 1 MiB Secret through the real
``KubeClient.read_secret_key`` (the API answer is a stub ``V1Secret``; no cluster needed) and
registers worst-case values at the cap. They are written to ``redaction_bound.json`` in
REMEDY_RESULTS_DIR and checked against the chart's memory limit (charts/remedy/values.yaml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from remedy import redaction
from remedy.redaction import MAX_SECRET_BYTES, IndexFullError, Redactor, SecretTooLargeError
from tests.fixtures.helpers import REPO, results_dir

_MEASURE = r'''
import asyncio, base64, json, random, sys, time
from kubernetes import client as k8s
from remedy import redaction
from remedy.api.common import SecretKeyRef
from remedy.clients.kube import KubeClient
from remedy.errors import SecretRefError

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

out = {"baselineRssMiB": rss_mib()}
random.seed(7)
# 1 MiB Secret value, read the way the operator reads it.
big = base64.b64encode(bytes(random.randrange(256) for _ in range(1024 * 1024))).decode()

class Core:
    def read_namespaced_secret(self, name, namespace):
        return k8s.V1Secret(data={"token": big})

kube = KubeClient.__new__(KubeClient)
kube.core = Core()
async def call(what, fn, *args, mutating=False, **kw):
    return fn(*args, **kw)
kube.call = call
t = time.monotonic()
try:
    asyncio.run(kube.read_secret_key("ns", SecretKeyRef(name="huge", key="token")))
    out["oneMiB"] = {"refused": False}
except SecretRefError as exc:
    out["oneMiB"] = {"refused": True, "reason": exc.reason, "message": exc.message}
out["oneMiB"].update(seconds=round(time.monotonic() - t, 3), peakRssMiB=hwm_mib(),
                     fragmentsIndexed=redaction.REDACTOR.fragments())

# Values at the cap, in the alphabets with the longest encodings.
cap = redaction.MAX_SECRET_BYTES
values = {
    "alnum": "".join(random.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=", k=cap)),
    "controlChars": "".join(chr(random.randrange(1, 32)) for _ in range(cap)),
    "cjk": "".join(chr(random.randrange(0x4E00, 0x9FFF)) for _ in range(cap // 3)),
}
out["atCap"] = {}
for name, value in values.items():
    before = rss_mib()
    t = time.monotonic()
    redaction.REDACTOR.register(value)
    out["atCap"][name] = {"bytes": len(value.encode()), "seconds": round(time.monotonic() - t, 3),
                          "rssGrowthMiB": round(rss_mib() - before, 1)}
out["fragmentsIndexed"] = redaction.REDACTOR.fragments()
t = time.monotonic()
text = "".join(random.choices("abcdefghijklmnopqrstuvwxyz .:/-0123456789", k=10_000))
redaction.redact(text)
out["redact10kCharsSeconds"] = round(time.monotonic() - t, 4)
out["peakRssMiB"] = hwm_mib()
print(json.dumps(out))
'''


def _memory_limit_mib() -> float:
    values = yaml.safe_load((REPO / "charts" / "remedy" / "values.yaml").read_text())
    limit = str(values["resources"]["limits"]["memory"])
    assert limit.endswith("Mi"), limit
    return float(limit[:-2])


def test_one_mib_secret_is_refused_and_values_at_the_cap_stay_far_inside_the_memory_limit() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    limit = _memory_limit_mib()
    figures.update(memoryLimitMiB=limit, capBytes=MAX_SECRET_BYTES, wallSeconds=round(time.monotonic() - started, 2))
    (results_dir() / "redaction_bound.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")

    one = figures["oneMiB"]
    assert one["refused"] and one["reason"] == "SecretTooLarge", one
    assert "huge" in one["message"] and str(MAX_SECRET_BYTES) in one["message"]
    assert one["fragmentsIndexed"] == 0 and one["seconds"] < 5
    # Inside the chart's limit with a wide margin: the whole run (a 1 MiB Secret read and three
    # worst-case values at the cap) peaks below half of it; each value at the cap adds < 48 MiB.
    assert figures["peakRssMiB"] < limit / 2, figures
    for name, row in figures["atCap"].items():
        assert row["rssGrowthMiB"] < 48 and row["seconds"] < 10, (name, row)


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
