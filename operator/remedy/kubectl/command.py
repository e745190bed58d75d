"""What a subcommand is, and the few helpers every subcommand shares.

A command is data: its name, one line of help, which object its positional NAME refers to (if
any), extra arguments, and ``run(kube, args) -> exit code``. ``main`` builds the parser from
the list in ``commands/__init__.py``, so adding a command is adding one module there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .client import Kube, PluginError
from .render import dump


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[Kube, argparse.Namespace], int]
    # The positional NAME: a Remediation's, a RemediationPolicy's, or none (list).
    target: Literal["Remediation", "RemediationPolicy"] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def namespace(kube: Kube, args: argparse.Namespace) -> str:
    return str(getattr(args, "namespace", None) or kube.default_namespace)


def output(args: argparse.Namespace, allowed: Iterable[str]) -> str | None:
    """The ``-o`` format, if one of ``allowed``; kubectl's error otherwise."""
    fmt: str | None = getattr(args, "output", None)
    allowed = tuple(allowed)
    if fmt is not None and fmt not in allowed:
        raise PluginError(f"unable to match a printer suitable for the output format {fmt!r}, "
                          f"allowed formats are: {','.join(allowed)}")
    return fmt


def done(obj: dict[str, Any], fmt: str | None, message: str) -> int:
    """What a mutating command prints: the object (-o json|yaml), its kind/name (-o name), or ``message``."""
    if fmt in ("json", "yaml"):
        sys.stdout.write(dump(obj, fmt))
    elif fmt == "name":
        sys.stdout.write(message.split(" ", 1)[0] + "\n")
    else:
        sys.stdout.write(message + "\n")
    return 0
