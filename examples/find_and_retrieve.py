"""Find a series by Patient ID, exam date and Series Description, retrieve it, and load it as a
3-D image.

    python examples/find_and_retrieve.py HOST PORT PACS_AE PATIENT_ID DATE_RANGE DESCRIPTION
        [--method move|get] [--our-ae AIOSCU] [--our-port 11113] [--out DIR]

C-MOVE (the default) needs the PACS to know our AE title, host and --our-port as a move
destination; C-GET (--method get) needs nothing configured. With --out the series is written
there as Part 10 files; otherwise it is kept in memory and converted with SimpleITK (if
installed) or NumPy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

import aiodicom
from aiodicom.series import Series
from aiodicom.sinks import DirectorySink, MemorySink


async def main(args: argparse.Namespace) -> None:
    port = args.our_port if args.method == "move" else None
    pacs = aiodicom.PeerAddress(args.host, args.port, args.pacs_ae)
    async with aiodicom.Client(args.our_ae, peer=pacs, listen_port=port) as client:
        async for match in client.find_series(
            PatientID=args.patient_id,
            StudyDate=args.date_range,
            SeriesDescription=args.description,
        ):
            print(
                f"{match.StudyDate} {match.get('SeriesDescription', '')!r}: "
                f"series {match.SeriesInstanceUID}"
            )
            sink = DirectorySink(args.out) if args.out else MemorySink()
            retrieval = client.move(match, sink=sink) if args.method == "move" \
                else client.get(match, sink=sink)
            result = await retrieval
            print(f"  {len(result.completed)} instances, {result.bytes_received} bytes: "
                  f"{result.status_text}")
            if isinstance(sink, MemorySink) and len(sink):
                series = Series(sink)
                try:
                    image = series.to_sitk()
                    print(f"  SimpleITK image {image.GetSize()} spacing {image.GetSpacing()}")
                except ImportError:
                    volume = series.to_numpy()
                    print(f"  NumPy volume {volume.shape}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("pacs_ae")
    parser.add_argument("patient_id")
    parser.add_argument("date_range", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    parser.add_argument("description", help="Series Description, wildcards * and ? allowed")
    parser.add_argument("--method", choices=("move", "get"), default="move")
    parser.add_argument("--our-ae", default="AIOSCU")
    parser.add_argument("--our-port", type=int, default=11113)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse_arguments())
