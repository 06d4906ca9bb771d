"""Ask two PACS at once, on one event loop: each one's studies of a patient, side by side.

    python examples/two_pacs.py PATIENT_ID HOST:PORT:AE HOST:PORT:AE [--our-ae AIOSCU]

One Client serves both: each PACS is a Peer with its own associations from the client's pool,
and the two queries run concurrently in one task group.
"""

from __future__ import annotations

import argparse

import anyio

import aiodicom
from aiodicom import Query


async def studies_at(peer: aiodicom.Peer, patient_id: str, found: dict[str, list[str]]) -> None:
    query = Query.study(PatientID=patient_id, StudyDescription=None)
    async for study in peer.find(query):
        found[peer.ae_title].append(f"{study.StudyDate} {study.get('StudyDescription', '')}")


async def main(args: argparse.Namespace) -> None:
    async with aiodicom.Client(args.our_ae) as client:
        peers = []
        for address in args.pacs:
            host, port, ae_title = address.split(":")
            peers.append(client.peer(host, int(port), ae_title))
        found: dict[str, list[str]] = {peer.ae_title: [] for peer in peers}
        async with anyio.create_task_group() as tasks:
            for peer in peers:
                tasks.start_soon(studies_at, peer, args.patient_id, found)
        for ae_title, studies in found.items():
            print(f"{ae_title}: {len(studies)} studies")
            for line in sorted(studies):
                print(f"  {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patient_id")
    parser.add_argument("pacs", nargs=2, help="HOST:PORT:AE of each PACS")
    parser.add_argument("--our-ae", default="AIOSCU")
    anyio.run(main, parser.parse_args())
