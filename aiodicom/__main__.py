"""``python -m aiodicom``: the command line (for now the demo only: ``python -m aiodicom demo``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiodicom", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    # Imported here: the demo pulls in the server and the synthetic data, which other
    # commands will not need.
    from aiodicom import cli_demo

    demo = commands.add_parser(
        "demo", help="find a series, retrieve it by C-MOVE and C-GET, print the volume",
        description=cli_demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_demo.add_arguments(demo)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return cli_demo.run(args)
    parser.error(f"unknown command {args.command!r}")  # never returns
    return 2


if __name__ == "__main__":
    sys.exit(main())
