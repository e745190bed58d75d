"""Argument parsing and exit codes of ``kubectl-remedy`` (the console script's entry point).

kubectl's global flags are accepted before or after the subcommand; usage errors and
failures exit 1 with one line on stderr, as kubectl does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .client import Kube, PluginError
from .commands import COMMANDS

_NAME_METAVAR = {"Remediation": "NAME", "RemediationPolicy": "POLICY"}


class _Parser(argparse.ArgumentParser):
    """kubectl exits 1 on usage errors too; argparse's default is 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n")


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """kubectl's global flags; accepted before or after the subcommand."""
    d = None if top else argparse.SUPPRESS  # subparser defaults must not clobber top-level values
    parser.add_argument("--kubeconfig", default=d, help="path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=d, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=d, help="namespace (default: the context's namespace)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="list across all namespaces")
    parser.add_argument("-o", "--output", default=d, help="output format: wide|json|yaml|name (per command)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubectl remedy", description="Inspect and steer remedy Remediations and RemediationPolicies.")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        _common(p, top=False)
        if command.target:
            p.add_argument("name", metavar=_NAME_METAVAR[command.target], help=f"{command.target} name")
        if command.add_arguments:
            command.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help(sys.stderr)
        return 1
    try:
        kube = Kube(args.kubeconfig, args.context)
        return COMMANDS[args.command].run(kube, args)
    except PluginError as exc:
        msg = str(exc)
        sys.stderr.write(msg if msg.startswith(("error:", "Error")) else f"error: {msg}")
        sys.stderr.write("\n")
        return 1
    except BrokenPipeError:  # `kubectl remedy list | head`
        return 0
