"""The operator's container image for the real node, built here as an OCI archive.

Why: the repository's Dockerfile needs Docker and a registry, neither of which exists here,
but the chart must be tested as it runs in production: as a pod, with its ServiceAccount,
RBAC and admission policies. Same recipe as the demo app's image (remedy_devenv.demo_image):
Debian's python3.11 and the shared libraries it needs, the third-party packages the operator
imports (cp311 wheels from the venv), the operator package, and a ``remedy`` launcher on PATH
(the chart's ``command: ["remedy"]``). Files are world-readable, so the chart's
``runAsUser: 10001`` with a read-only root filesystem works.

    python -m remedy_devenv.operator_image   # prints the image name and archive path
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .demo_image import PYTHON, build_python_image, probe_roots

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "remedy"
# Imported inside functions (per action), so not seen by importing the modules.
LAZY_IMPORTS = ("redis.asyncio", "async_timeout", "pymongo", "psycopg", "prometheus_api_client")
LAUNCHER = f"#!{PYTHON}\nimport sys\nfrom remedy.cli import main\nsys.exit(main())\n"


def third_party_roots() -> list[Path]:
    """Top-level site-packages entries every remedy module (and the lazy imports) pulls in."""
    probe = (
        "import importlib, pkgutil, sys\n"
        "import remedy\n"
        "for info in pkgutil.walk_packages(remedy.__path__, 'remedy.'):\n"
        "    if not info.name.endswith('__main__'): importlib.import_module(info.name)\n"
        f"for m in {LAZY_IMPORTS!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError:\n"
        "        pass\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None)\n"
        "    if f and 'site-packages' in f: print(f)\n"
    )
    # dist_info: importlib.metadata lookups at run time (kopf reads its own version).
    return probe_roots(probe, env={"PYTHONPATH": str(OPERATOR.parent), "PATH": "/usr/bin:/bin"}, dist_info=True)


def build(out_dir: Path | None = None) -> tuple[str, Path]:
    with tempfile.TemporaryDirectory() as tmp:
        launcher = Path(tmp) / "remedy"
        launcher.write_text(LAUNCHER)
        launcher.chmod(0o755)
        return build_python_image("operator", third_party_roots(),
                                  [(OPERATOR, "/app/remedy"), (launcher, "/usr/local/bin/remedy")],
                                  ["/usr/local/bin/remedy"], out_dir=out_dir)


if __name__ == "__main__":
    image, path = build()
    print(image, path)
