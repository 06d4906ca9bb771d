"""``aiodicom qrscp PORT DIR`` (the embedded Q/R SCP over a directory) and ``aiodicom storescp
PORT -o DIR`` (a storage SCP writing Part 10 files); both serve until Ctrl-C or SIGTERM, then
print what they received and served."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

from aiodicom.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    CliError,
    add_network_options,
    client_for,
    human_bytes,
    timeouts,
)
from aiodicom.server import InstanceIndex, QRServer, run_scan
from aiodicom.sinks import DirectorySink

__all__ = ["add_qrscp", "add_storescp"]

QRSCP_HELP = """\
Serve the DICOM files under DIR as a Query/Retrieve SCP (C-ECHO, C-FIND, C-MOVE, C-GET, and
C-STORE into DIR), like DCMTK's dcmqrscp without its configuration file. DIR is scanned at
start (an index is kept in DIR/.aiodicom-index.sqlite3). Ctrl-C or SIGTERM stops it and prints
what was received.

example:
  aiodicom qrscp 11112 archive/ --synthetic --move-dest VIEWER=127.0.0.1:11113
"""

STORESCP_HELP = """\
Receive C-STOREs on PORT and write each instance as a Part 10 file under DIR
(<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm), like DCMTK's storescp. Ctrl-C or
SIGTERM stops it and prints what was received.
"""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0-65535")
    return port


def _destination(text: str) -> tuple[str, str, int]:
    ae_title, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not ae_title or not host:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a move destination as AET=HOST:PORT, e.g. VIEWER=127.0.0.1:11113")
    return ae_title, host, _port(port)


def _server_options(parser: argparse.ArgumentParser, default_aet: str, *, tls: bool) -> None:
    parser.add_argument("listen_port", metavar="PORT", type=_port,
                        help="the port to listen on (0: a free one, printed)")
    parser.add_argument("--listen-host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1, loopback only; "
                             "0.0.0.0 for every interface)")
    # The Q/R SCP has no TLS listener yet: no TLS options rather than options ignored.
    add_network_options(parser, peer=False, tls=tls, default_aet=default_aet)
    parser.set_defaults(stops_by_signal=True)


def add_qrscp(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "qrscp", help="serve a directory of DICOM files as a Q/R SCP",
        description=QRSCP_HELP, epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _server_options(parser, "AIOQR", tls=False)
    parser.add_argument("directory", metavar="DIR", type=Path,
                        help="the files served; received instances are written there")
    parser.add_argument("--move-dest", metavar="AET=HOST:PORT", type=_destination,
                        action="append", default=[],
                        help="a C-MOVE destination (repeatable); others are refused (A801)")
    parser.add_argument("--synthetic", action="store_true",
                        help="when DIR holds no DICOM file, fill it with the synthetic studies "
                             "(aiodicom.testing.synthetic) first")
    parser.set_defaults(run=_qrscp)


def add_storescp(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "storescp", help="receive C-STOREs into a directory",
        description=STORESCP_HELP, epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _server_options(parser, "STORESCP", tls=True)
    parser.add_argument("-o", "--output", metavar="DIR", type=Path, required=True,
                        help="where the received files go")
    parser.set_defaults(run=_storescp)


def _announce(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        # flush: a parent process (a test, a script) waits for this line to know we listen.
        print(text, flush=True)


async def _qrscp(args: argparse.Namespace) -> int:
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
            timeouts=timeouts(args), **({"max_pdu_length": args.max_pdu} if args.max_pdu else {}),
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


async def _storescp(args: argparse.Namespace) -> int:
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
