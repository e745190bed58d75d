"""Issue 20 item 7, measured: a 1 MiB Secret is refused and values at the cap stay far inside
the chart's memory limit.

The figures come from a fresh Python process (``_MEASURE``) so the peak RSS (VmHWM) is that of
the work measured, not of pytest: it imports remedy, reads a 1 MiB Secret through the real
``KubeClient.read_secret_key`` (the API answer is a stub ``V1Secret``; no cluster needed) and
registers worst-case values at the cap. They are written to ``redaction_bound.json`` in
REMEDY_RESULTS_DIR (docs/security.md renders them) and checked against the chart's memory limit
(charts/remedy/values.yaml). Here rather than in tests/unit because it writes a results file
that a docs table is generated from. The index's own properties: tests/unit/test_redaction_bound.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import yaml

from remedy.base.redaction import MAX_SECRET_BYTES
from tests.fixtures.helpers import REPO, results_dir

_MEASURE = r'''
import asyncio, base64, json, random, sys, time
from kubernetes import client as k8s
from remedy.base import redaction
from remedy.api.common import SecretKeyRef
from remedy.clients.kube import KubeClient
from remedy.base.errors import SecretRefError

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




def _status_mib(pid: int, field: str) -> float:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 - a short read of procfs
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def test_the_operator_refuses_a_one_mib_secret_inside_its_memory_limit(kube_admin: Any, operator_factory: Any) -> None:
    """The observed case on the real control plane: a Remediation referencing a 1 MiB Secret.
    The operator process's peak RSS (VmHWM, read from /proc by the test, not reported by the
    operator) stays far inside the chart's limit, and the Remediation ends Failed/SecretTooLarge."""
    import base64
    import random

    from kubernetes import client

    from tests.fixtures.operator import condition, create_rem, make_namespace, wait_phase

    ns = make_namespace(kube_admin, "s20")
    op = operator_factory(args=["-n", ns]).start()
    try:
        op.wait_ready(timeout=60)
        assert op.proc is not None
        pid = op.proc.pid
        rng = random.Random(20)
        value = base64.b64encode(bytes(rng.randrange(256) for _ in range(768 * 1024))).decode()  # 1 MiB of text
        client.CoreV1Api(kube_admin).create_namespaced_secret(ns, {
            "metadata": {"name": "huge"}, "data": {"token": base64.b64encode(value.encode()).decode()}})
        before = _status_mib(pid, "VmRSS")
        started = time.monotonic()
        create_rem(kube_admin, ns, "huge-secret", {"action": {"httpRequest": {
            "url": "http://127.0.0.1:9/never", "method": "POST", "bearerTokenSecretRef": {"name": "huge", "key": "token"}}}})
        done = wait_phase(kube_admin, ns, "huge-secret", {"Succeeded", "Failed"})
        seconds = time.monotonic() - started
        figures = {"secretBytes": len(value), "operatorRssBeforeMiB": round(before, 1),
                   "operatorRssAfterMiB": round(_status_mib(pid, "VmRSS"), 1),
                   "operatorPeakRssMiB": round(_status_mib(pid, "VmHWM"), 1),
                   "secondsToFailed": round(seconds, 2), "reason": condition(done, "Completed")["reason"],
                   "memoryLimitMiB": _memory_limit_mib()}
        (results_dir() / "redaction_bound_operator.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        assert figures["reason"] == "SecretTooLarge", done["status"]
        message = condition(done, "Completed")["message"]
        assert "huge" in message and str(MAX_SECRET_BYTES) in message and value[:16] not in json.dumps(done)
        assert figures["operatorPeakRssMiB"] < figures["memoryLimitMiB"] / 2, figures
        assert figures["operatorRssAfterMiB"] - figures["operatorRssBeforeMiB"] < 64, figures
    finally:
        op.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
