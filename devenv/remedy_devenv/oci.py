"""Pack a directory tree into an OCI image archive that `ctr images import` accepts.

Why this exists: the real local node (remedy_devenv.node) needs container images, and no
registry is reachable here, so images are assembled from files on this machine (a static
pause binary, Debian's python3 and the demo app) into one uncompressed layer and imported
into containerd. The archive is an OCI image layout (oci-layout, index.json, blobs/) with
the `io.containerd.image.name` annotation that containerd's importer uses as the image name.
Entries are written with fixed owners and timestamps, so the same files give the same
digest and a rebuild is detectably a no-op.

Standard library only: scripts/build-node runs it with the system python3, before any venv.
Usage: python3 oci.py --name remedy.local/pause:1 --out pause.tar \
           --add /path/to/pause=/pause --entrypoint /pause
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


SKIP_DIRS = frozenset({"__pycache__"})  # never wanted in an image; rebuilt at run time if needed


def _entries(src: Path, dest: str) -> Iterable[tuple[Path, str]]:
    """(host path, path in image) for src and, if it is a real directory, everything below it."""
    yield src, dest
    if src.is_dir() and not src.is_symlink():
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            rel = Path(root).relative_to(src)
            for name in dirs + sorted(files):
                yield Path(root) / name, f"{dest.rstrip('/')}/{(rel / name).as_posix()}"


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def write_layer(out: IO[bytes], adds: Sequence[tuple[Path, str]]) -> None:
    """A tar layer of `adds` (host path -> absolute image path), parents created as 0755 dirs."""
    seen: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for src, dest in adds:
            for host, inside in _entries(src, dest):
                name = inside.strip("/")
                for parent in _parents("/" + name):
                    if parent not in seen:
                        seen.add(parent)
                        info = tarfile.TarInfo(parent)
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                if not name or name in seen:
                    continue
                seen.add(name)
                st = host.lstat()
                info = tarfile.TarInfo(name)
                info.mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(host)
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    info.size = st.st_size
                    with open(host, "rb") as fh:
                        tar.addfile(info, fh)
                # sockets, fifos and devices are never needed in these images: skipped


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build(name: str, out: Path, adds: Sequence[tuple[Path, str]], entrypoint: Sequence[str],
          cmd: Sequence[str] = (), env: Sequence[str] = (), workdir: str = "/") -> str:
    """Write the archive `out` for image `name`; return the manifest digest."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent) as layer:
        write_layer(layer, adds)
        size = layer.tell()
        layer.seek(0)
        h = hashlib.sha256()
        for chunk in iter(lambda: layer.read(1 << 20), b""):
            h.update(chunk)
        layer_digest = f"sha256:{h.hexdigest()}"
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Cmd": list(cmd) or None,
                       "Env": list(env) or ["PATH=/usr/local/bin:/usr/bin:/bin"],
                       "WorkingDir": workdir},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
        tmp = out.with_suffix(".tmp")
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar_add = tarfile.TarInfo("oci-layout")
            layout = b'{"imageLayoutVersion":"1.0.0"}'
            tar_add.size, tar_add.mode = len(layout), 0o644
            tar.addfile(tar_add, io.BytesIO(layout))
            layer.seek(0)
            info = tarfile.TarInfo(f"blobs/sha256/{layer_digest.split(':')[1]}")
            info.size, info.mode = size, 0o644
            tar.addfile(info, layer)
            cfg = _blob(tar, json.dumps(config, sort_keys=True).encode())
            manifest = {
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, **cfg},
                "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": size}],
            }
            man = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
            index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [{
                "mediaType": MANIFEST_TYPE, **man,
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
            }]}
            data = json.dumps(index, sort_keys=True).encode()
            info = tarfile.TarInfo("index.json")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        tmp.replace(out)
    return str(man["digest"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="image name, e.g. remedy.local/pause:1")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--add", action="append", default=[], metavar="HOST=IMAGE_PATH")
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--cmd", action="append", default=[])
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--workdir", default="/")
    args = parser.parse_args(argv)
    adds = [(Path(a.split("=", 1)[0]), a.split("=", 1)[1]) for a in args.add]
    digest = build(args.name, args.out, adds, args.entrypoint, args.cmd, args.env, args.workdir)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
