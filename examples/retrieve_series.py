"""The series a user knows by Patient ID, exam date and Series Description, as a 3-D image.

    python examples/retrieve_series.py PATIENT_ID DATE DESCRIPTION [--method move|get]
        [--pacs HOST:PORT:AE] [--our-ae AIOSCU] [--our-port 11113]

The PACS defaults to $PACS (HOST:PORT:AE), else 127.0.0.1:11112:PACS. Keys the PACS ignores
(DCMTK dcmqrscp does not match Series Description) are checked here on one instance of each
candidate series before anything else is retrieved. C-MOVE (the default) needs the PACS to know
our AE title, host and --our-port; C-GET needs nothing configured.
"""

from __future__ import annotations

import argparse
import os

import anyio

import aiodicom


async def main(args: argparse.Namespace) -> None:
    host, port, ae_title = args.pacs.split(":")
    our_port = args.our_port if args.method == "move" else None
    async with aiodicom.Client(
        args.our_ae, peer=(host, int(port), ae_title), listen_port=our_port
    ) as client:
        selection = await client.retrieve_series(
            PatientID=args.patient_id, StudyDate=args.date,
            SeriesDescription=args.description, method=args.method,
        )
        print(selection.report())
        print(f"{len(selection)} series, {selection.bytes_received} bytes "
              f"({selection.probe_bytes} on probes of rejected series)")
        for series in selection:
            image = series.to_sitk()  # needs SimpleITK; series.to_numpy() needs NumPy only
            print(f"image {image.GetSize()} spacing {image.GetSpacing()} "
                  f"origin {image.GetOrigin()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patient_id")
    parser.add_argument("date", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    parser.add_argument("description", help="Series Description; wildcards * and ? allowed")
    parser.add_argument("--method", choices=("move", "get"), default="move")
    parser.add_argument("--pacs", default=os.environ.get("PACS", "127.0.0.1:11112:PACS"))
    parser.add_argument("--our-ae", default="AIOSCU")
    parser.add_argument("--our-port", type=int, default=11113)
    anyio.run(main, parser.parse_args())
