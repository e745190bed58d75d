"""``kubectl remedy``: the operator's day-2 surface for people on call.

Why this exists: ``kubectl get rem`` shows one line per object, but during an incident people
need the *story* of a Remediation (plan, evidence, conditions and Events on one timeline), a
safe way to approve one (only when it is actually waiting, never blindly), a pause switch for
a policy that misbehaves, a policy's history, and a post-incident report they can paste into
the review. Installed as the console script ``kubectl-remedy`` so kubectl's plugin discovery
finds it on PATH; it follows kubectl conventions (``--kubeconfig``, ``--context``,
``-n/--namespace`` defaulting to the context's namespace, ``-A``, ``-o json|yaml``; exit 0 on
success, 1 with a message on stderr otherwise).

It reads and writes only through the Kubernetes API (the kubernetes python client) and only
touches metadata and ``spec``: status belongs to the operator.

Layout: ``client`` (the few API calls, kubectl-like errors), ``render`` (times, tables, the
timeline), ``command`` (what a command is and the helpers every command shares),
``commands/<name>.py`` (one module per subcommand; add one there and list it in
``commands/__init__.py``), ``main`` (argument parsing and exit codes).
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
