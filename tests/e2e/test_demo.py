"""The README's main command end to end: `./scripts/demo` as a subprocess, every scenario, then
proof that nothing it started is left behind. Also: Ctrl-C during startup cleans up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from remedy_devenv.scenarios import SCENARIOS

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def _demo(args: list[str], record: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "remedy_devenv.demo", "--record", str(record), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError, PermissionError):
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _port_owner_cmdline(port: int) -> str:
    res = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False)
    pids = re.findall(r"pid=(\d+)", res.stdout)
    cmd = ""
    for pid in pids:
        try:
            cmd += Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") + " cwd=" + os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
    return cmd


def assert_cleaned_up(record: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(record.read_text())
    deadline = time.monotonic() + 15  # the last children may still be exiting
    left: list[str] = []
    while time.monotonic() < deadline:
        left = [f"{n} pid {p}" for n, p in doc["pids"].items() if _alive(p)]
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"processes left running: {left}"
    # Ports: one still listening is fine only if its owner is not ours (other tests pick free
    # ports too, and may have taken one of ours since); ours would name the state dir.
    for name, port in doc["ports"].items():
        if _listening(port):
            owner = _port_owner_cmdline(port)
            assert doc["state_dir"] not in owner, f"{name} port {port} still served by {owner}"
    assert not Path(doc["state_dir"]).exists(), f"{doc['state_dir']} not removed"
    return doc


def test_full_demo_remediates_every_scenario_and_leaves_nothing(tmp_path: Path) -> None:
    record = tmp_path / "demo.json"
    proc = _demo([], record)
    try:
        out, _ = proc.communicate(timeout=8 * 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"demo did not finish in 8 min:\n{out[-5000:]}")
    print(out)
    assert proc.returncode == 0, out[-5000:]
    summary = out[out.rindex("summary"):]
    for sc in SCENARIOS:
        row = next((line for line in summary.splitlines() if line.strip().startswith(sc.name + " ")), None)
        assert row is not None, f"{sc.name} missing from summary:\n{summary}"
        if sc.expect_phase == "Skipped":
            assert "refused (UpstreamUnhealthy) as expected" in row, row
        else:
            assert re.search(r"\d+\.\ds\s+remediated\s*$", row), row
    assert f"{len(SCENARIOS)}/{len(SCENARIOS)} scenarios ended as expected" in summary
    for milestone in ("incident injected", "Prometheus alert", "Alertmanager active", "created by policy",
                      "applied with kubectl", "plan:", "action:", "verification:", "resolved:"):
        assert milestone in out, milestone
    doc = assert_cleaned_up(record)
    assert {"kube-apiserver", "etcd", "operator", "postgres", "redis", "prometheus", "alertmanager",
            "mongowire", "demo-gateway", "demo-orders"} <= set(doc["pids"]), doc["pids"]


def test_sigint_during_startup_stops_what_was_started(tmp_path: Path) -> None:
    record = tmp_path / "demo.json"
    proc = _demo(["--scenario", "oom"], record)
    try:
        # Wait until the control plane and at least one more server run, then Ctrl-C.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if record.exists():
                pids = json.loads(record.read_text())["pids"]
                if "kube-apiserver" in pids and "redis" in pids:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("demo did not get past the control plane in 120s")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted" in out and "stopped; removed" in out, out
    doc = assert_cleaned_up(record)
    assert "kube-apiserver" in doc["pids"] and "redis" in doc["pids"]
    assert "summary" not in out
