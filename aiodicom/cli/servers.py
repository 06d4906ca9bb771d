"""``aiodicom qrscp PORT DIR`` (the embedded Q/R SCP over a directory) and ``aiodicom storescp
PORT -o DIR`` (a storage SCP writing Part 10 files); both serve until Ctrl-C or SIGTERM, then
print what they received and served."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from aiodicom.cli.common import (
    EXIT_OK,
    Args,
    CliError,
    client_for,
    human_bytes,
    server_tls,
    timeouts,
)
from aiodicom.cli.params import PORT, argument, command, network_options, option, stack
from aiodicom.server import InstanceIndex, QRServer, run_scan
from aiodicom.sinks import DirectorySink

__all__ = ["COMMANDS", "listen_port", "qrscp", "server_options", "storescp"]

F = TypeVar("F", bound=Callable[..., Any])

QRSCP_HELP = """\
Serve the DICOM files under DIR as a Query/Retrieve SCP (C-ECHO, C-FIND, C-MOVE, C-GET, and
C-STORE into DIR), like DCMTK's dcmqrscp without its configuration file. DIR is scanned at
start (an index is kept in DIR/.aiodicom-index.sqlite3). Ctrl-C or SIGTERM stops it and prints
what was received.

\b
example:
  aiodicom qrscp 11112 archive/ --synthetic --move-dest VIEWER=127.0.0.1:11113
"""

STORESCP_HELP = """\
Receive C-STOREs on PORT and write each instance as a Part 10 file under DIR
(<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm), like DCMTK's storescp. Ctrl-C or
SIGTERM stops it and prints what was received.
"""


def _move_destinations(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> list[tuple[str, str, int]]:
    """``--move-dest AET=HOST:PORT`` options as (AE title, host, port)."""
    destinations = []
    for text in values:
        ae_title, sep, address = text.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not ae_title or not host or not port.isdigit() \
                or int(port) > 65535:
            raise click.BadParameter(
                f"{text!r}: give a move destination as AET=HOST:PORT, e.g. "
                "VIEWER=127.0.0.1:11113", ctx, param)
        destinations.append((ae_title, host, int(port)))
    return destinations


def server_options(*, default_aet: str) -> Callable[[F], F]:
    """``--listen-host`` and the network options of a server (after its own options)."""
    return stack([
        option("--listen-host", default="127.0.0.1", metavar="ADDRESS", section="listening",
               help="the address to listen on (default 127.0.0.1, loopback only; 0.0.0.0 for "
                    "every interface)"),
        network_options(peer=False, default_aet=default_aet),
    ])


def listen_port() -> Callable[[F], F]:
    return argument("listen_port", metavar="PORT", type=PORT,
                    help="the port to listen on (0: a free one, printed)")


def _announce(args: Args, text: str) -> None:
    if not args.quiet:
        # flush: a parent process (a test, a script) waits for this line to know we listen.
        print(text, flush=True)


@command("qrscp", "serve a directory of DICOM files as a Q/R SCP (dcmqrscp)",
         QRSCP_HELP, needs_rich=False, stops_by_signal=True, default_aet="AIOQR")
@listen_port()
@argument("directory", metavar="DIR", type=click.Path(path_type=Path),
          help="the files served; received instances are written there")
@option("--move-dest", metavar="AET=HOST:PORT", multiple=True, callback=_move_destinations,
        section="Q/R SCP",
        help="a C-MOVE destination (repeatable); others are refused (A801)")
@option("--synthetic", is_flag=True, section="Q/R SCP",
        help="when DIR holds no DICOM file, fill it with the synthetic studies "
             "(aiodicom.testing.synthetic) first")
@server_options(default_aet="AIOQR")
async def qrscp(args: Args) -> int:
    directory: Path = args.directory
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} is not a directory; give the directory to serve")
    with InstanceIndex(directory) as index:
        started = time.perf_counter()
        progress = await run_scan(index)
        if args.synthetic and len(index) == 0:
            from aiodicom.testing.synthetic import write_synthetic

            # Once, before serving: nobody is waiting on the loop yet.
            written = write_synthetic(directory)
            progress = await run_scan(index)
            _announce(args, f"wrote {len(written)} synthetic instances into {directory}")
        served = len(index)
        _announce(args, f"indexed {served} instances under {directory} "
                        f"({progress.files_seen} files, {time.perf_counter() - started:.1f} s)")
        server = QRServer(
            args.aet or args.default_aet, index, listen_host=args.listen_host,
            listen_port=args.listen_port,
            move_destinations={ae: (host, port) for ae, host, port in args.move_dest},
            timeouts=timeouts(args), server_ssl_context=server_tls(args),
            **({"max_pdu_length": args.max_pdu} if args.max_pdu else {}),
        )
        try:
            async with anyio.create_task_group() as tasks:
                port = await tasks.start(server.serve_forever)
                destinations = ", ".join(
                    f"{ae}={host}:{p}" for ae, (host, p) in server.move_destinations.items()
                ) or "none"
                _announce(args, f"Q/R SCP {server.ae_title} listening on "
                                f"{args.listen_host}:{port} (move destinations: {destinations});"
                                " Ctrl-C to stop")
        finally:
            received = len(index) - served
            if not args.quiet:
                print(f"stopped: served {served} instances; {received} received by C-STORE, "
                      f"{len(index)} now in {directory}", file=sys.stderr, flush=True)
    return EXIT_OK


@command("storescp", "receive C-STOREs into a directory (storescp)", STORESCP_HELP,
         needs_rich=False, stops_by_signal=True, default_aet="STORESCP")
@listen_port()
@option("-o", "--output", metavar="DIR", type=click.Path(path_type=Path), required=True,
        section="storage", help="where the received files go")
@server_options(default_aet="STORESCP")
async def storescp(args: Args) -> int:
    sink = DirectorySink(args.output)
    client = client_for(args, None, listen_port=args.listen_port,
                        listen_host=args.listen_host, unexpected_deliveries=sink)
    started = time.perf_counter()
    try:
        async with client:
            _announce(args, f"storage SCP {client.ae_title} listening on "
                            f"{args.listen_host}:{client.listen_port}, writing to {args.output};"
                            " Ctrl-C to stop")
            await anyio.sleep_forever()
    finally:
        if not args.quiet:
            size = sum(p.stat().st_size for p in sink.paths.values() if p.exists())
            studies = {p.parent.parent for p in sink.paths.values()}
            print(f"stopped: received {len(sink.paths)} instances of {len(studies)} studies "
                  f"({human_bytes(size)}) in {time.perf_counter() - started:.1f} s into "
                  f"{args.output}", file=sys.stderr, flush=True)
    return EXIT_OK


COMMANDS = (storescp, qrscp)
