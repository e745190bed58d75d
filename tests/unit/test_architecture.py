"""Layers are a contract (import-linter); the public surface is listed and importable; the
error tree maps to kopf in one place; mypy strict holds for the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest

import remedy
from remedy.base import errors

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_import_layers_contract_is_kept() -> None:
    res = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_api_package_imports_nothing_else_of_remedy_but_the_base() -> None:
    """api is the bottom layer above the base: it may use the base (shared names, the timestamp
    helper), which in turn imports nothing of remedy."""
    for path in (REPO / "operator" / "remedy" / "api").glob("*.py"):
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("from ..base")]
        text = "\n".join(lines)
        assert "from .." not in text and "import remedy" not in text, path
    base = sorted((REPO / "operator" / "remedy" / "base").glob("*.py"))
    assert {p.name for p in base} >= {"errors.py", "config.py", "constants.py", "rfc3339.py", "redaction.py",
                                      "malloc.py", "observability.py"}
    for path in base:
        text = path.read_text()
        assert "from ." not in text and "import remedy" not in text, path


def test_import_contracts_name_the_houses() -> None:
    """The contracts docs/architecture.md lists are the ones pyproject.toml holds."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    assert layers == ["remedy.handlers", "remedy.runtime", "remedy.triggers", "remedy.policies", "remedy.lifecycle",
                      "remedy.actions", "remedy.clients", "remedy.api", "remedy.base"]
    doc = (REPO / "docs" / "architecture.md").read_text()
    for contract in contracts:
        assert contract["name"] in doc, contract["name"]


def test_public_surface() -> None:
    from remedy import api
    from remedy.actions import registry

    assert set(api.__all__) >= {"Remediation", "RemediationPolicy", "RemediationSpec", "ActionSpec", "Condition"}
    assert callable(registry.get) and remedy.GROUP == "remedy.dev" and remedy.VERSION == "v1alpha1"
    for name in ("RetryableError", "PermanentError", "InvalidSpecError", "TargetNotFoundError", "ForbiddenError",
                 "SecretRefError", "OverCapError", "SkipError"):
        assert issubclass(getattr(errors, name), errors.RemedyError)


async def test_retryable_error_becomes_kopf_temporary_error_with_its_delay() -> None:
    from remedy import handlers

    class Lifecycle:
        async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> None:
            raise errors.RetryableError("api down", delay=7.0)

    memo = kopf.Memo()
    memo.lifecycle = Lifecycle()
    with pytest.raises(kopf.TemporaryError) as info:
        await handlers.reconcile_remediation(body=kopf.Body({}), namespace="n", name="x", memo=memo)
    assert info.value.delay == 7.0


def test_mypy_strict_on_the_package() -> None:
    res = subprocess.run([str(BIN / "mypy"), "--config-file", str(REPO / "pyproject.toml")], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]


def test_wheel_holds_only_the_operator(tmp_path: Path) -> None:
    """The shipped wheel (and so the image, which pip-installs it) carries no harness module."""
    import zipfile

    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    wheels = list(tmp_path.glob("remedy-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert any(n.startswith("remedy/lifecycle/") for n in names), names[:20]
    assert not [n for n in names if "devenv" in n or not (n.startswith("remedy/") or ".dist-info/" in n)]


def test_dockerfile_copies_only_the_operator() -> None:
    copies = [line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY") and "--from" not in line]
    assert copies and set(copies) <= {"pyproject.toml", "operator"}, copies


def test_ruff_is_clean() -> None:
    """The lint rules in pyproject.toml hold for the whole repository (operator, harness, tests, bench)."""
    res = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
