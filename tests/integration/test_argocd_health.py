"""Argo CD health checks (deploy/argocd) tested the way argo-cd tests its own: every
health.lua runs against its health_test.yaml fixtures in gopher-lua, the runtime the Argo CD
controller uses, with only the libraries a script from argocd-cm gets (no `string`).

Needs Go (scripts/build-luahealth builds the runner once into ~/.cache/remedy/tools).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CUSTOMIZATIONS = ROOT / "deploy" / "argocd" / "resource_customizations"
KINDS = ["Remediation", "RemediationPolicy"]
OBJECT = """\
apiVersion: remedy.dev/v1alpha1
kind: Remediation
metadata: {name: x, generation: 1}
status: {phase: Succeeded, observedGeneration: 1}
"""


@pytest.fixture(scope="module")
def runner() -> Path:
    # No skip when Go is missing: the build below fails and says so (CI must not pass silently).
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-luahealth")], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"build-luahealth failed:\n{proc.stderr}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file(), proc.stdout
    return path


def run(runner: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(runner), *map(str, args)], capture_output=True, text=True, timeout=60)


def write_case(tmp_path: Path, lua: str, status: str, message: str) -> Path:
    (tmp_path / "testdata").mkdir()
    (tmp_path / "testdata" / "obj.yaml").write_text(OBJECT)
    (tmp_path / "health.lua").write_text(lua)
    test = {"tests": [{"healthStatus": {"status": status, "message": message}, "inputPath": "testdata/obj.yaml"}]}
    (tmp_path / "health_test.yaml").write_text(yaml.safe_dump(test))
    return tmp_path / "health_test.yaml"


@pytest.mark.parametrize("kind", KINDS)
def test_health_checks_pass(runner: Path, kind: str) -> None:
    proc = run(runner, CUSTOMIZATIONS / "remedy.dev" / kind / "health_test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_every_fixture_is_used_and_every_status_covered(kind: str) -> None:
    folder = CUSTOMIZATIONS / "remedy.dev" / kind
    tests = yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]
    used = {t["inputPath"] for t in tests}
    on_disk = {f"testdata/{p.name}" for p in (folder / "testdata").glob("*.yaml")}
    assert used == on_disk, f"unreferenced: {on_disk - used}, missing: {used - on_disk}"
    statuses = {t["healthStatus"]["status"] for t in tests}
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= statuses


def test_remediation_phases_all_covered() -> None:
    folder = CUSTOMIZATIONS / "remedy.dev" / "Remediation"
    phases = set()
    for f in (folder / "testdata").glob("*.yaml"):
        phases.add((yaml.safe_load(f.read_text()).get("status") or {}).get("phase"))
    phases.discard(None)
    expected = {"Pending", "AwaitingApproval", "Running", "Verifying", "Succeeded", "Failed", "Skipped"}
    assert expected <= phases


def test_runner_reports_wrong_expectation(runner: Path, tmp_path: Path) -> None:
    # The real Remediation check, but the fixture claims Succeeded is Degraded.
    lua = (CUSTOMIZATIONS / "remedy.dev" / "Remediation" / "health.lua").read_text()
    test = write_case(tmp_path, lua, "Degraded", "wrong on purpose")
    proc = run(runner, test)
    assert proc.returncode != 0, proc.stdout
    assert "FAIL" in proc.stdout
    assert '- status:  "Degraded"' in proc.stdout and '+ status:  "Healthy"' in proc.stdout
    assert "0 passed, 1 failed" in proc.stdout


def test_string_library_is_not_available(runner: Path, tmp_path: Path) -> None:
    lua = 'local hs = {}\nhs.status = "Healthy"\nhs.message = string.format("phase %s", obj.status.phase)\nreturn hs\n'
    test = write_case(tmp_path, lua, "Healthy", "phase Succeeded")
    proc = run(runner, test)
    assert proc.returncode != 0, proc.stdout
    # `string` is nil here: "attempt to index a non-table object(nil) with key 'format'".
    assert "ERROR" in proc.stdout and "with key 'format'" in proc.stdout, proc.stdout
    # Method syntax on strings needs the string metatable, which the string library sets.
    lua_method = 'local hs = {}\nhs.status = "Healthy"\nhs.message = ("x"):upper()\nreturn hs\n'
    (tmp_path / "health.lua").write_text(lua_method)
    assert run(runner, test).returncode != 0
    # ...and the same script passes with Argo CD's useOpenLibs, so the failure is the restriction.
    (tmp_path / "health.lua").write_text(lua)
    proc = run(runner, "-open-libs", test)
    assert proc.returncode == 0, proc.stdout


def test_timeout_is_enforced(runner: Path, tmp_path: Path) -> None:
    test = write_case(tmp_path, "while true do end\n", "Healthy", "")
    proc = run(runner, test)
    assert proc.returncode != 0
    assert "timeout" in proc.stdout, proc.stdout


def test_invalid_status_becomes_unknown(runner: Path, tmp_path: Path) -> None:
    lua = 'local hs = {}\nhs.status = "Fine"\nhs.message = "x"\nreturn hs\n'
    test = write_case(tmp_path, lua, "Unknown", "Lua returned an invalid health status")
    proc = run(runner, test)
    assert proc.returncode == 0, proc.stdout


def test_argocd_cm_patch_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-argocd-cm"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    cm = yaml.safe_load((ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    for kind in KINDS:
        key = f"resource.customizations.health.remedy.dev_{kind}"
        assert cm["data"][key] == (CUSTOMIZATIONS / "remedy.dev" / kind / "health.lua").read_text()
    assert not any("useOpenLibs" in key for key in cm["data"]), "the checks must work without open libs"


@pytest.mark.parametrize("kind", KINDS)
def test_configmap_lua_passes_fixtures(runner: Path, kind: str, tmp_path: Path) -> None:
    cm = yaml.safe_load((ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml").read_text())
    script = tmp_path / "health.lua"
    script.write_text(cm["data"][f"resource.customizations.health.remedy.dev_{kind}"])
    proc = run(runner, "-script", script, CUSTOMIZATIONS / "remedy.dev" / kind / "health_test.yaml")
    assert proc.returncode == 0, proc.stdout


def test_application_example() -> None:
    text = (ROOT / "deploy" / "argocd" / "application.yaml").read_text()
    apps = [d for d in yaml.safe_load_all(text) if d]
    assert [a["kind"] for a in apps] == ["Application"]
    app = apps[0]
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    assert "SkipDryRunOnMissingResource=true" in app["spec"]["syncPolicy"]["syncOptions"]
    # The waves are documented where they must be set: on the CRDs (-1) and policies (1).
    assert 'argocd.argoproj.io/sync-wave: "-1"' in text and 'argocd.argoproj.io/sync-wave: "1"' in text
