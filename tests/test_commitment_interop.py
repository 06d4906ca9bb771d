"""Storage Commitment Push Model against real SCPs: pynetdicom (report on the same association,
on a new association to our acceptor, with failures) and Orthanc (which reports on a new
association to the modality it knows by our AE title)."""

from __future__ import annotations

import logging

import pytest
from peers import in_thread, require_module
from peers.corpus import Corpus
from peers.orthanc import Orthanc
from peers.pynetdicom_commitment import CommitmentScp

from aiodicom import AssociationAborted, Client, CommitmentTimeout, ReferencedInstance

pytestmark = pytest.mark.interop

AE = "AIOSCU"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _refs(count: int, prefix: str = "2.25.7000") -> list[ReferencedInstance]:
    return [ReferencedInstance(CT_IMAGE, f"{prefix}{n}") for n in range(count)]


async def test_pynetdicom_reports_on_the_same_association() -> None:
    require_module("pynetdicom")
    refs = _refs(4)
    scp = CommitmentScp(held=[r.sop_instance_uid for r in refs[:3]],
                        reasons={refs[1].sop_instance_uid: 0x0110})
    with scp:
        async with Client(AE, peer=("127.0.0.1", scp.port, scp.ae_title)) as client:
            result = await client.commit(refs, timeout=30)
    assert scp.errors == []
    assert result.same_association and result.reporter_ae_title == "COMMITSCP"
    assert result.event_type_id == 2 and not result.ok
    assert set(result.committed) == {refs[0], refs[2]}
    assert {(f.sop_instance_uid, f.failure_reason, f.reason) for f in result.failed} == {
        (refs[1].sop_instance_uid, 0x0110, "processing failure"),
        (refs[3].sop_instance_uid, 0x0112, "no such object instance"),
    }
    assert scp.reports == [(result.transaction_uid, 2, 0x0000)]


async def test_pynetdicom_reports_on_a_new_association_to_our_acceptor() -> None:
    require_module("pynetdicom")
    refs = _refs(3, "2.25.7100")
    async with Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        scp = CommitmentScp(held=[r.sop_instance_uid for r in refs], report_on="new-association",
                            report_to=("127.0.0.1", client.listen_port))
        with scp:
            peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
            result = await peer.commit(refs, timeout=30, same_association_wait=0)
            await in_thread(scp.stop)  # joins its report thread
        assert scp.errors == []
        assert result.ok and not result.same_association
        assert result.event_type_id == 1 and set(result.committed) == set(refs)
        assert scp.reports == [(result.transaction_uid, 1, 0x0000)]


async def test_pynetdicom_report_for_an_unknown_transaction_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SCP reporting under a Transaction UID we never issued gets 0x0115 (invalid argument
    value) and a log line; our transaction times out, and the acceptor serves on."""
    require_module("pynetdicom")
    refs = _refs(1, "2.25.7200")
    async with Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        scp = CommitmentScp(held=[refs[0].sop_instance_uid], report_on="new-association",
                            report_to=("127.0.0.1", client.listen_port),
                            transaction_uid="2.25.999999")
        with scp, caplog.at_level(logging.WARNING, logger="aiodicom.commitment"):
            peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
            with pytest.raises(CommitmentTimeout):
                await peer.commit(refs, timeout=3, same_association_wait=0)
            await in_thread(scp.stop)
        assert scp.errors == []
        assert scp.reports == [("2.25.999999", 1, 0x0115)]
        assert "2.25.999999" in caplog.text and "no such transaction" in caplog.text
        async with Client("OTHER") as other:
            await other.peer("127.0.0.1", client.listen_port, AE).echo()


async def test_orthanc_reports_on_a_new_association(orthanc: Orthanc, corpus: Corpus) -> None:
    instances = corpus.instances[:5]
    refs = [ReferencedInstance(i.sop_class_uid, i.sop_instance_uid) for i in instances]
    missing = ReferencedInstance(CT_IMAGE, "2.25.7300999")
    other_class = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture: not what Orthanc holds
    conflict = ReferencedInstance(other_class, corpus.instances[5].sop_instance_uid)
    assert corpus.instances[5].sop_class_uid != other_class
    async with Client(AE, peer=(orthanc.host, orthanc.port, orthanc.ae_title),
                      listen_port=0) as client:
        assert client.listen_port is not None
        with orthanc.temporary_modality(AE, AE, "127.0.0.1", client.listen_port):
            result = await client.commit([*refs, missing, conflict], timeout=60)
    assert not result.same_association and result.reporter_ae_title == orthanc.ae_title
    assert set(result.committed) == set(refs)
    assert {(f.sop_instance_uid, f.failure_reason) for f in result.failed} == {
        (missing.sop_instance_uid, 0x0112), (conflict.sop_instance_uid, 0x0119),
    }
    assert result.event_type_id == 2 and result.unreported == ()


async def test_orthanc_aborts_a_request_from_an_unknown_modality(
    orthanc: Orthanc, corpus: Corpus,
) -> None:
    """Orthanc 1.10 answers an N-ACTION from an AE missing in DicomModalities with A-ABORT: the
    error says what to configure, and no transaction is left pending."""
    refs = [ReferencedInstance(i.sop_class_uid, i.sop_instance_uid)
            for i in corpus.instances[:1]]
    async with Client("UNKNOWNAE", peer=(orthanc.host, orthanc.port, orthanc.ae_title),
                      listen_port=0) as client:
        with pytest.raises(AssociationAborted, match="DicomModalities"):
            await client.commit(refs, timeout=10)
        assert len(client.commitments) == 0
