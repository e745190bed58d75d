"""The subcommands, in the order ``kubectl remedy --help`` lists them. To add one, write a
module here that defines ``COMMAND`` (see ``..command.Command``) and list it below."""

from __future__ import annotations

from ..command import Command
from . import apply, approve, describe, history, list, pause, report, resume

COMMANDS: dict[str, Command] = {
    c.name: c for c in (list.COMMAND, describe.COMMAND, apply.APPLY, apply.CREATE, approve.COMMAND, pause.COMMAND, resume.COMMAND,
                        history.COMMAND, report.COMMAND)
}
