"""The demo services' container image for the real node: Debian's python3.11 + the demo app.

Why this exists: on a real node (remedy_devenv.node) pods need an image, and no registry is
reachable. The interpreter and standard library are the files of this machine's Debian
python3.11 packages (`/usr/bin/python3.11`, `/usr/lib/python3.11`) with the shared libraries
`ldd` says they need; the third-party packages are exactly the ones `remedy_devenv.demoapp`
imports, copied from the venv (cp311 wheels: same ABI as Debian's 3.11); the app is
`remedy_devenv/demoapp`. Packed by remedy_devenv.oci into one layer; rebuilt only when an
input changes (the tag is a hash of every input file's path, size and mtime).

    python -m remedy_devenv.demo_image      # prints the image name and archive path
    image: remedy.local/demoapp:<tag>; run as `--role ROLE --port P` (the demoapp CLI)
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from . import oci

PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
DEVENV = Path(__file__).resolve().parent
APP_FILES = ("__init__.py", "testkit.py", "demoapp")
# Imported lazily by the demo app (only with --redis-url), so not seen by the import probe.
# async_timeout: redis.asyncio imports it on Python < 3.11.3, which the image's Debian python is
LAZY_IMPORTS = ("redis.asyncio", "async_timeout")


def _images_dir() -> Path:
    cache = Path(os.environ.get("REMEDY_CACHE") or Path.home() / ".cache" / "remedy")
    return cache / "images"


def third_party_roots() -> list[Path]:
    """Top-level site-packages entries (package dirs or modules) the demo app imports."""
    probe = (
        "import importlib, sys\n"
        "import remedy_devenv.demoapp.process\n"
        f"for m in {LAZY_IMPORTS!r}:\n"
        "    importlib.import_module(m)\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None)\n"
        "    if f and 'site-packages' in f: print(f)\n"
    )
    return probe_roots(probe)


def probe_roots(probe: str, env: dict[str, str] | None = None, dist_info: bool = False) -> list[Path]:
    """Run ``probe`` (it prints the files of the modules it imported) with the venv's python;
    the top-level site-packages entries among them (and their .dist-info with ``dist_info``)."""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout
    roots: set[Path] = set()
    for line in out.splitlines():
        site, rel = line.split("site-packages/", 1)
        top = rel.split("/", 1)[0]
        if top.startswith(("__editable__", "_distutils_hack")):
            continue
        roots.add(Path(site + "site-packages") / top)
        if dist_info:
            roots.update(Path(site + "site-packages").glob(f"{top.split('.')[0]}-*.dist-info"))
    return sorted(roots)


def _shared_libraries(binaries: Iterable[Path]) -> set[Path]:
    """Every library `ldd` resolves for the given ELF files (and the dynamic loader)."""
    libs: set[Path] = set()
    for binary in binaries:
        res = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for match in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", res.stdout):
            libs.add(Path(match.group(1)))
    return libs


def _in_image(path: Path) -> str:
    """The path inside the image: parent directories resolved (Debian's /lib is a symlink to
    usr/lib; the image gets the same symlinks), the file name kept (it may be a symlink)."""
    return str(Path(os.path.realpath(path.parent)) / path.name)


def build(out_dir: Path | None = None) -> tuple[str, Path]:
    """(image name, archive path); builds the archive unless one with the same inputs exists."""
    return build_python_image("demoapp", third_party_roots(), [(DEVENV / f, f"/app/remedy_devenv/{f}") for f in APP_FILES],
                              [str(PYTHON), "-m", "remedy_devenv.demoapp"], out_dir=out_dir)


def build_python_image(image: str, roots: list[Path], app: list[tuple[Path, str]], entrypoint: list[str],
                       out_dir: Path | None = None, extra_env: list[str] | None = None) -> tuple[str, Path]:
    """Debian's python3.11 + ``roots`` (site-packages entries) + ``app`` files, as
    remedy.local/<image>:<hash of the inputs>; reused when an archive with that tag exists."""
    if not PYTHON.exists():
        raise FileNotFoundError(f"{PYTHON} missing: Debian's python3.11 (scripts/install-deps)")
    elf = [PYTHON, *STDLIB.joinpath("lib-dynload").glob("*.so")]
    elf += [p for r in roots if r.is_dir() for p in r.rglob("*.so")]
    libs = _shared_libraries(elf)
    files: list[tuple[Path, str]] = []
    for lib in sorted(libs):  # the library, and the file a versioned symlink points at
        files.append((lib, _in_image(lib)))
        if lib.is_symlink():
            target = Path(os.path.realpath(lib))
            files.append((target, str(target)))
    files += [(PYTHON, str(PYTHON)), (STDLIB, str(STDLIB))]
    files += [(r, f"/opt/site-packages/{r.name}") for r in roots]
    files += app

    h = hashlib.sha256(Path(oci.__file__).read_bytes())
    h.update(repr((entrypoint, extra_env)).encode())
    for src, dest in files:
        for host, inside in oci._entries(src, dest):
            st = host.lstat()
            h.update(f"{inside}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    tag = h.hexdigest()[:12]
    name = f"remedy.local/{image}:{tag}"
    out_dir = out_dir or _images_dir()
    archive = out_dir / f"{image}-{tag}.tar"
    if archive.exists():
        return name, archive
    with tempfile.TemporaryDirectory() as tmp:
        links = []
        for top in ("bin", "lib", "lib64", "sbin"):  # Debian's merged /usr
            link = Path(tmp) / top
            link.symlink_to(f"usr/{top}")
            links.append((link, f"/{top}"))
        tmpdir = Path(tmp) / "tmp"
        tmpdir.mkdir(mode=0o1777)
        tmpdir.chmod(0o1777)
        oci.build(name, archive, [*links, (tmpdir, "/tmp"), *files], entrypoint=entrypoint,
                  env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/app:/opt/site-packages",
                       "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", *(extra_env or [])])
    for old in out_dir.glob(f"{image}-*.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    return name, archive


if __name__ == "__main__":
    image, path = build()
    print(image, path)
