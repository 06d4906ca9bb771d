"""``aiodicom demo``: the options of :func:`aiodicom.cli_demo.demo`."""

from __future__ import annotations

from aiodicom import cli_demo
from aiodicom.cli.params import PORT, command, option, output_options, stack

__all__ = ["COMMANDS", "demo"]

_PACS = "a real PACS instead of the embedded one"

_options = stack([
    option("--host", metavar="HOST", section=_PACS,
           help="the PACS's host (default: start the embedded Q/R SCP)"),
    option("--port", type=PORT, default=104, section=_PACS, help="the PACS's port (default 104)"),
    option("--aec", default="ANY-SCP", metavar="AET", section=_PACS, help="the PACS's AE title"),
    option("--aet", default="AIODEMO", metavar="AET", help="our AE title (default AIODEMO)"),
    option("--our-port", type=PORT, default=0,
           help="where our acceptor listens for the C-MOVE (default: a free port; a real PACS "
                "must have our AE title at this port as a move destination)"),
    option("--listen-host", default="127.0.0.1", metavar="ADDRESS",
           help="our acceptor's address (default loopback only)"),
    option("--patient-id", default="AIO-0001", show_default=True),
    option("--study-date", default="20240312", show_default=True),
    option("--series-description", default="AX*", show_default=True,
           help="a wildcard, checked here too (not every PACS matches it)"),
    option("--no-move", is_flag=True, help="skip the C-MOVE"),
    option("--no-get", is_flag=True, help="skip the C-GET"),
    output_options(quiet=False),
])

demo = command(
    "demo", "find a series, retrieve it by C-MOVE and C-GET, print the volume",
    "Find a series and retrieve it by C-MOVE and by C-GET into memory (keys the PACS ignores "
    "are checked before bulk transfer), and print it as a volume, with timings.\n\n"
    "Without --host it starts the embedded Q/R SCP on a free loopback port with the synthetic "
    "patients, and runs the client against it in the same process, on the same event loop. "
    "With --host/--port/--aec it uses a real PACS instead, which must know our AE title "
    "(--aet) at --our-port as a C-MOVE destination.", needs_rich=False,
)(_options(cli_demo.demo))

COMMANDS = (demo,)
