"""``aiodicom`` / ``python -m aiodicom``: DICOM networking from the command line, DCMTK-style.

  echo      C-ECHO a peer                      (echoscu)
  find      C-FIND, as a table, DICOM JSON or files (findscu)
  move      C-MOVE to us (or --dest), with progress (movescu)
  get       C-GET, with progress               (getscu)
  retrieve  C-MOVE or C-GET, as peers.toml says for the peer
  store     C-STORE files and directories      (storescu)
  storescp  receive C-STOREs into a directory  (storescp)
  qrscp     serve a directory as a Q/R SCP     (dcmqrscp)
  demo      find a series, retrieve it by C-MOVE and C-GET, print the volume

A peer is HOST PORT, or a name from ~/.config/aiodicom/peers.toml ($AIODICOM_PEERS):

  [mypacs]
  host = "pacs.example"
  port = 11112
  ae_title = "PACS"
  method = "move"        # or "get": how 'aiodicom retrieve mypacs ...' retrieves
  our_ae_title = "AIOSCU"  # optional: our AE title (-aet) and, for C-MOVE, our port
  our_port = 11113

'aiodicom COMMAND --help' tells each command's options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Commands that need the extra "cli" (rich: tables and progress bars).
_NEEDS_RICH = frozenset({"echo", "find", "move", "get", "retrieve", "store"})


def _parser() -> argparse.ArgumentParser:
    from aiodicom.cli.common import EXIT_CODES_HELP

    parser = argparse.ArgumentParser(
        prog="aiodicom", description=__doc__, epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Imported here: the demo pulls in the server and the synthetic data, which other
    # commands will not need.
    from aiodicom import cli_demo
    from aiodicom.cli import scu, servers

    scu.add_commands(commands)
    servers.add_storescp(commands)
    servers.add_qrscp(commands)
    demo = commands.add_parser(
        "demo", help="find a series, retrieve it by C-MOVE and C-GET, print the volume",
        description=cli_demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_demo.add_arguments(demo)
    return parser


def _has_rich() -> bool:
    try:
        importlib.import_module("rich")
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in _NEEDS_RICH and not _has_rich():
        print(f"aiodicom {command} needs the extra 'cli': pip install 'aiodicom[cli]'",
              file=sys.stderr)
        return 2
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "store" and not any(a.startswith("-") for a in extra):
        # argparse cannot give files that follow options to the FILE_OR_DIR positional
        # ("store HOST PORT -aec PACS a.dcm"): they come back unknown, and are files.
        args.targets += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "demo":
        from aiodicom import cli_demo

        return cli_demo.run(args)
    from aiodicom.cli.common import run_command

    return run_command(args, args.run)


if __name__ == "__main__":
    sys.exit(main())
