"""`remedy` console script: run the operator or generate CRDs.

The local demo is not part of the shipped operator; it lives in the development harness
(devenv/, `./scripts/demo`)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remedy", description="remedy: runbooks as safe, audited remediation")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", default=[], help="watch these namespaces (repeatable)")
    run.add_argument("-A", "--all-namespaces", action="store_true")
    run.add_argument("--peering", default=None, help="kopf peering name for HA (default: standalone)")
    run.add_argument("--priority", type=int, default=0)
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8082/healthz")
    run.add_argument("--log-format", choices=["plain", "json"], default="plain",
                     help="json: one object per line with the Remediation's namespace/name/uid")
    sub.add_parser("crdgen", help="write crds/ from the models").add_argument("--check", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    if args.cmd == "crdgen":
        from . import crdgen

        return crdgen.main(["--check"] if args.check else [])
    import kopf

    from . import handlers  # noqa: F401 - registers the handlers
    from .base.observability import configure_logging

    configure_logging(args.log_format)
    # Before any worker thread exists: arenas are per thread (remedy/base/malloc.py says why).
    from .base import malloc

    malloc.limit_arenas(int(os.environ.get("REMEDY_MALLOC_ARENAS", "2")))
    # The namespaces given with `-n` (None: cluster-wide), for the shard takeover's listing.
    watched = None if args.all_namespaces or not args.namespace else list(args.namespace)
    kopf.run(
        memo=kopf.Memo(watched_namespaces=watched),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
