"""Retrieve a patient's studies by C-MOVE and by C-GET, showing progress as it comes.

    python examples/move_and_get.py PATIENT_ID [--pacs HOST:PORT:AE] [--our-ae AIOSCU]
        [--our-port 11113] [--out DIR]

The PACS defaults to $PACS (HOST:PORT:AE), else 127.0.0.1:11112:PACS. C-MOVE needs the PACS
to know our AE title with this host and --our-port; C-GET needs nothing configured. Instances
are kept in memory, or written under --out as Part 10 files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import anyio

import aiodicom
from aiodicom import InstanceArrived, Progress, Query


async def show(retrieval: aiodicom.Retrieval, what: str) -> None:
    async with retrieval:
        async for event in retrieval:
            if isinstance(event, Progress):
                print(f"  {what}: {event.completed} done, {event.remaining} remaining")
            elif isinstance(event, InstanceArrived):
                print(f"  {what}: got {event.instance.sop_instance_uid}")
    result = retrieval.result
    assert result is not None
    print(f"{what}: {len(result.completed)} instances, {result.bytes_received} bytes, "
          f"{result.status_text}")


async def main(args: argparse.Namespace) -> None:
    host, port, ae_title = args.pacs.split(":")
    async with aiodicom.Client(
        args.our_ae, peer=(host, int(port), ae_title), listen_port=args.our_port
    ) as client:
        # Read the study level whole before retrieving (a PACS may lock its index meanwhile).
        studies = await client.find(Query.study(PatientID=args.patient_id)).all()
        for study in studies:
            sink = aiodicom.DirectorySink(args.out) if args.out else aiodicom.MemorySink()
            await show(client.move(study, sink=sink), f"C-MOVE {study.StudyDate}")
            # the same instances again, this time on the association that asked for them
            await show(client.get(study, sink=sink), f"C-GET {study.StudyDate}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patient_id")
    parser.add_argument("--pacs", default=os.environ.get("PACS", "127.0.0.1:11112:PACS"))
    parser.add_argument("--our-ae", default="AIOSCU")
    parser.add_argument("--our-port", type=int, default=11113)
    parser.add_argument("--out", type=Path, default=None)
    anyio.run(main, parser.parse_args())
