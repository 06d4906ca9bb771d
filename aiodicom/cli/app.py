"""The ``aiodicom`` command: a click group of the commands of :data:`COMMAND_MODULES`, and
:func:`main`, which gives click's usage errors as one line with exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from aiodicom.cli import demo, pull, scu, servers
from aiodicom.cli.common import EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, Args
from aiodicom.cli.params import CONTEXT_SETTINGS, preformatted

__all__ = ["COMMAND_MODULES", "HELP", "build", "main", "parse"]

HELP = "DICOM networking from the command line, DCMTK-style.\n\n" + preformatted("""\
A peer is HOST PORT, or a name from ~/.config/aiodicom/peers.toml ($AIODICOM_PEERS):

  [mypacs]
  host = "pacs.example"
  port = 11112
  ae_title = "PACS"
  method = "move"          # or "get": how 'aiodicom retrieve mypacs ...' retrieves
  our_ae_title = "AIOSCU"  # optional: our AE title (-aet) and, for C-MOVE, our port
  our_port = 11113

'aiodicom COMMAND --help' tells each command's arguments and options.""")

COMMAND_MODULES = (scu, pull, servers, demo)
"""The modules whose ``COMMANDS`` are the subcommands, in the order ``--help`` lists them. A new
subcommand is a module with a ``COMMANDS`` tuple (see :mod:`aiodicom.cli.params`) added here."""


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # as added (echo, find, ...), not sorted by name


def build() -> click.Group:
    group = _Group("aiodicom", help=HELP, epilog=preformatted(EXIT_CODES_HELP),
                   context_settings=CONTEXT_SETTINGS)
    for module in COMMAND_MODULES:
        for command in module.COMMANDS:
            group.add_command(command)
    return group


def parse(argv: Sequence[str]) -> Args:
    """The options of ``aiodicom COMMAND ARGS...`` as the command's ``run`` receives them
    (without running it)."""
    name, *rest = argv
    command = build().commands[name]
    with command.make_context(f"aiodicom {name}", list(rest)) as ctx:
        return Args(command=name, **ctx.params)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    group = build()
    if not args:
        with group.make_context("aiodicom", ["--help"], resilient_parsing=True) as ctx:
            click.echo(group.get_help(ctx))
        return EXIT_USAGE
    try:
        result = group.main(args=args, prog_name="aiodicom", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "aiodicom"
        message = " ".join(exc.format_message().split()).rstrip(".")
        print(f"{where}: {message}; see '{where} --help'", file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as exc:
        print(f"aiodicom: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    return result if isinstance(result, int) else EXIT_OK
