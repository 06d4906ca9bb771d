"""Find a patient's studies, series and images, one table per level.

    python examples/find_levels.py PATIENT_ID [--pacs HOST:PORT:AE] [--our-ae AIOSCU]

The PACS defaults to $PACS (HOST:PORT:AE), else 127.0.0.1:11112:PACS. Each level is read
whole before the next is asked for, which some PACS (DCMTK dcmqrscp) need.
"""

from __future__ import annotations

import argparse
import os

import anyio

import aiodicom
from aiodicom import Query, QueryModel


def table(title: str, rows: list[list[object]], columns: list[str]) -> None:
    print(f"\n{title}")
    print("  ".join(f"{name:<24}" for name in columns))
    for row in rows:
        print("  ".join(f"{str(value)[:24]:<24}" for value in row))


async def main(args: argparse.Namespace) -> None:
    host, port, ae_title = args.pacs.split(":")
    async with aiodicom.Client(args.our_ae, peer=(host, int(port), ae_title)) as client:
        patients = await client.find(Query.patient(
            model=QueryModel.PATIENT_ROOT, PatientID=args.patient_id, PatientBirthDate=None
        )).all()
        columns = ["PatientID", "PatientName", "PatientBirthDate"]
        table("PATIENT", [[p.get(c, "") for c in columns] for p in patients], columns)

        studies = await client.find(Query.study(PatientID=args.patient_id)).all()
        columns = ["StudyDate", "AccessionNumber", "StudyInstanceUID"]
        table("STUDY", [[s.get(c, "") for c in columns] for s in studies], columns)

        series = await client.find_series(PatientID=args.patient_id).all()
        columns = ["StudyDate", "Modality", "SeriesNumber", "SeriesInstanceUID"]
        table("SERIES", [[s.get(c, "") for c in columns] for s in series], columns)

        images = await client.find_images(PatientID=args.patient_id).all()
        columns = ["SeriesNumber", "InstanceNumber", "SOPInstanceUID"]
        table("IMAGE", [[i.get(c, "") for c in columns] for i in images], columns)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patient_id")
    parser.add_argument("--pacs", default=os.environ.get("PACS", "127.0.0.1:11112:PACS"))
    parser.add_argument("--our-ae", default="AIOSCU")
    anyio.run(main, parser.parse_args())
