import logging
import aiodicom
from aiodicom.query import Query, QueryModel

async def test_scratch(dcmqrscp, orthanc, corpus, caplog):
    caplog.set_level(logging.INFO)
    async with aiodicom.Client("AIOSCU") as client:
        for p in (dcmqrscp, orthanc):
            peer = client.peer(p.host, p.port, p.ae_title)
            f = peer.find(Query.study(PatientName="*"))
            async with f:
                ms = [m async for m in f]
            print(p, len(ms), f.result)
            for m in ms:
                print(repr(m.get("SpecificCharacterSet")), m.PatientName, m.PatientID)
            f = peer.find(Query.series(StudyInstanceUID=corpus.studies[1].study_instance_uid, SeriesDescription="AX*"))
            ms = await f.all()
            print(len(ms), f.result)
            print(ms[0])
