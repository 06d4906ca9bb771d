"""Storage Commitment Push Model between our Client (SCU) and the embedded Q/R SCP, on one event
loop: the report on the request's association, on a new association to our acceptor, with
failures (index misses and a failure hook), a timeout leaving a transaction that can be awaited
again, store-and-commit, and reports our acceptor must refuse without harm."""

from __future__ import annotations

import logging
import socket

import anyio
import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom import (
    Client,
    CommitmentRegistry,
    CommitmentTimeout,
    ContextProposal,
    FailureReason,
    ReferencedInstance,
)
from aiodicom.datasets import encode_dataset
from aiodicom.dimse import (
    N_EVENT_REPORT_RQ,
    DimseMessage,
    command_name,
    decode_command,
    encode_command,
)
from aiodicom.server import InstanceIndex, QRServer
from aiodicom.server.commitment import CommitmentOptions
from aiodicom.services.commitment import CommitmentReport, send_event_report
from aiodicom.testing.pytest_plugin import QRScp
from aiodicom.testing.synthetic import synthetic_datasets
from aiodicom.uids import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)

AE = "AIOSCU"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


async def _held(index: InstanceIndex, client: Client, count: int) -> list[ReferencedInstance]:
    images = await client.find_images(PatientID="AIO-0001").all()
    refs = [ReferencedInstance(str(m.SOPClassUID), str(m.SOPInstanceUID)) for m in images]
    assert len(refs) >= count
    for ref in refs[:count]:
        assert index.get(ref.sop_instance_uid) is not None
    return refs[:count]


async def test_report_on_the_same_association(aiodicom_index: InstanceIndex) -> None:
    async with (
        QRServer("AIOQR", aiodicom_index) as server,
        Client(AE, peer=server.address) as client,  # no acceptor: the same association only
    ):
        held = await _held(aiodicom_index, client, 5)
        result = await client.commit(held, timeout=30)
        assert result.ok
        assert set(result.committed) == set(held) and result.failed == ()
        assert result.same_association and result.reporter_ae_title == "AIOQR"
        assert result.event_type_id == 1
        assert result.retrieve_ae_title == "AIOQR"
        assert len(client.commitments) == 0  # taken: forgotten
        # Given back to the pool before the report came: the association is still ours, and
        # the report on it still reaches the transaction.
        result = await client.commit(held, timeout=30, same_association_wait=0)
        assert result.ok and result.same_association


async def test_report_on_a_new_association_to_our_acceptor(
    aiodicom_qrscp: QRScp,
) -> None:
    aiodicom_qrscp.commitment.report_on = "new-association"
    async with Client(AE, peer=aiodicom_qrscp.peer, listen_port=0) as client:
        assert client.listen_port is not None
        aiodicom_qrscp.add_move_destination(AE, "127.0.0.1", client.listen_port)
        held = await _held(aiodicom_qrscp.index, client, 3)
        result = await client.commit(held, timeout=30)
        assert result.ok and not result.same_association
        assert result.reporter_ae_title == "AIOQR"
        # Also when our request's association is given back at once.
        result = await client.commit(held, timeout=30, same_association_wait=0)
        assert result.ok and not result.same_association


async def test_failures_are_reported_with_their_reasons(aiodicom_index: InstanceIndex) -> None:
    unknown = ReferencedInstance(CT_IMAGE, "1.2.3.4.5.6.7.8.9")
    async with (
        QRServer("AIOQR", aiodicom_index) as server,
        Client(AE, peer=server.address, listen_port=0) as client,
    ):
        held = await _held(aiodicom_index, client, 4)
        refused = held[1]
        secondary_capture = "1.2.840.10008.5.1.4.1.1.7"
        assert held[2].sop_class_uid != secondary_capture
        conflict = ReferencedInstance(secondary_capture, held[2].sop_instance_uid)
        server.commitment.failure_reason = (
            lambda ref: FailureReason.RESOURCE_LIMITATION if ref == refused else None
        )
        for report_on in ("same-association", "new-association"):
            server.commitment.report_on = report_on  # type: ignore[assignment]
            server.add_move_destination(AE, "127.0.0.1", client.listen_port or 0)
            result = await client.commit(
                [held[0], refused, conflict, unknown, held[3]], timeout=30
            )
            assert not result.ok and result.event_type_id == 2
            assert result.same_association == (report_on == "same-association")
            assert set(result.committed) == {held[0], held[3]}
            reasons = {f.sop_instance_uid: (f.failure_reason, f.reason)
                       for f in result.failed}
            assert reasons == {
                refused.sop_instance_uid: (0x0213, "resource limitation"),
                conflict.sop_instance_uid: (0x0119, "class/instance conflict"),
                unknown.sop_instance_uid: (0x0112, "no such object instance"),
            }
            assert result.unreported == ()


async def test_timeout_leaves_a_transaction_to_await_again(
    aiodicom_index: InstanceIndex,
) -> None:
    options = CommitmentOptions(report_on="new-association")
    async with (
        QRServer("AIOQR", aiodicom_index, commitment=options) as server,
        Client(AE, peer=server.address, listen_port=0) as client,
    ):
        held = await _held(aiodicom_index, client, 2)
        # The server reports to an address where nobody listens (a port bound, not listening):
        # the report is lost.
        with socket.socket() as nowhere:
            nowhere.bind(("127.0.0.1", 0))
            server.add_move_destination(AE, "127.0.0.1", nowhere.getsockname()[1])
            with pytest.raises(CommitmentTimeout) as caught:
                await client.commit(held, timeout=0.5, same_association_wait=0)
        uid = caught.value.transaction_uid
        assert isinstance(caught.value, aiodicom.DicomTimeoutError)
        assert uid in client.commitments
        assert "commitment_result" in str(caught.value)
        # Someone (here: the server, told where we are now) reports it later: the pending
        # transaction takes it.
        assert client.listen_port is not None
        report = CommitmentReport(uid, tuple(held), (), "AIOQR")
        await _report_from(server, client.listen_port, report)
        result = await client.commitment_result(uid, timeout=10)
        assert result.ok and result.transaction_uid == uid and not result.same_association
        assert uid not in client.commitments
        with pytest.raises(aiodicom.DicomError, match="no storage commitment transaction"):
            await client.commitment_result(uid, timeout=1)


async def _report_from(server: QRServer, port: int, report: CommitmentReport) -> int:
    """Send ``report`` to our acceptor as an SCP would, on a new association (SCP role)."""
    async with Client("AIOQR").peer("127.0.0.1", port, AE).associate(
        [ContextProposal(STORAGE_COMMITMENT_PUSH_MODEL, UNCOMPRESSED_TRANSFER_SYNTAXES,
                         scu_role=False, scp_role=True)]
    ) as session:
        return await send_event_report(session, report)


async def test_unknown_transaction_is_refused_and_logged(
    aiodicom_index: InstanceIndex, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        QRServer("AIOQR", aiodicom_index) as server,
        Client(AE, peer=server.address, listen_port=0) as client,
    ):
        assert client.listen_port is not None
        report = CommitmentReport("2.25.1234", (ReferencedInstance(CT_IMAGE, "1.2.3"),), ())
        with caplog.at_level(logging.WARNING, logger="aiodicom.commitment"):
            status = await _report_from(server, client.listen_port, report)
        assert status == 0x0115  # invalid argument value
        assert "2.25.1234" in caplog.text and "no such transaction" in caplog.text
        # A malformed one (no Transaction UID, an unknown event type) too; the acceptor lives.
        async with Client("AIOQR").peer("127.0.0.1", client.listen_port, AE).associate(
            [ContextProposal(STORAGE_COMMITMENT_PUSH_MODEL, UNCOMPRESSED_TRANSFER_SYNTAXES,
                             scu_role=False, scp_role=True)]
        ) as session:
            context = session.association.context(STORAGE_COMMITMENT_PUSH_MODEL)
            assert context.transfer_syntax is not None
            for event_type, data, expected in (
                (1, Dataset(), 0x0115),
                (7, CommitmentReport("2.25.1", (), ()).to_dataset(), 0x0113),
            ):
                async with session.dispatcher.operation() as message_id:
                    await session.dispatcher.send(DimseMessage(context.context_id, {
                        "CommandField": N_EVENT_REPORT_RQ,
                        "MessageID": message_id,
                        "AffectedSOPClassUID": STORAGE_COMMITMENT_PUSH_MODEL,
                        "AffectedSOPInstanceUID": STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
                        "EventTypeID": event_type,
                    }, encode_dataset(data, context.transfer_syntax)))
                    response = await session.dispatcher.next_response(message_id)
                assert response.status == expected
        await client.echo()
        held = await _held(aiodicom_index, client, 1)
        assert (await client.commit(held, timeout=30)).ok


async def test_store_and_commit(aiodicom_index: InstanceIndex) -> None:
    fresh = list(synthetic_datasets(rows=8, columns=8, slices=2, seed="commit"))[:3]
    async with (
        QRServer("AIOQR", InstanceIndex()) as server,
        Client(AE, peer=server.address) as client,
    ):
        result = await client.store_and_commit(fresh, timeout=30)
        assert result.stored.ok and result.commitment is not None and result.ok
        assert {r.sop_instance_uid for r in result.commitment.committed} == {
            str(ds.SOPInstanceUID) for ds in fresh
        }
        # The objects the peer refuses are not asked to be committed.
        broken = Dataset()
        result = await client.store_and_commit([broken], timeout=30)
        assert not result.stored.ok and result.commitment is None


def test_n_service_command_sets_round_trip() -> None:
    for fields in (
        {"CommandField": 0x0130, "MessageID": 7, "CommandDataSetType": 1,
         "RequestedSOPClassUID": STORAGE_COMMITMENT_PUSH_MODEL,
         "RequestedSOPInstanceUID": STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE, "ActionTypeID": 1},
        {"CommandField": 0x8130, "MessageIDBeingRespondedTo": 7, "CommandDataSetType": 0x0101,
         "AffectedSOPClassUID": STORAGE_COMMITMENT_PUSH_MODEL, "ActionTypeID": 1, "Status": 0},
        {"CommandField": 0x0100, "MessageID": 3, "CommandDataSetType": 1,
         "AffectedSOPInstanceUID": STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE, "EventTypeID": 2},
        {"CommandField": 0x8100, "MessageIDBeingRespondedTo": 3, "CommandDataSetType": 0x0101,
         "EventTypeID": 2, "Status": 0x0115},
    ):
        assert decode_command(encode_command(fields)) == fields
    assert command_name(0x0130) == "N-ACTION-RQ" and command_name(0x8100) == "N-EVENT-REPORT-RSP"


async def test_registry_bounds_and_expiry() -> None:
    ref = (ReferencedInstance(CT_IMAGE, "1.2.3"),)
    registry = CommitmentRegistry(max_pending=2, expiry=3600)
    registry.begin("2.25.1", ref, "PACS")
    registry.begin("2.25.2", ref, "PACS")
    registry.begin("2.25.3", ref, "PACS")  # full: the oldest nobody waits for goes
    assert "2.25.1" not in registry and len(registry) == 2
    assert registry.report(CommitmentReport("2.25.1", ref, ()), "PACS",
                           same_association=True) is None

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(registry.wait, "2.25.2", 10)
        await anyio.wait_all_tasks_blocked()
        registry.begin("2.25.4", ref, "PACS")  # 2.25.2 is awaited: 2.25.3 goes instead
        assert "2.25.2" in registry and "2.25.3" not in registry
        registry.max_pending = 1
        registry.discard("2.25.4")
        with pytest.raises(aiodicom.DicomError, match="being awaited"):
            registry.begin("2.25.5", ref, "PACS")  # the only one kept is awaited
        registry.report(CommitmentReport("2.25.2", ref, ()), "PACS", same_association=False)
    assert "2.25.2" not in registry  # its result was taken

    expiring = CommitmentRegistry(expiry=0)
    expiring.begin("2.25.9", ref, "PACS")
    assert "2.25.9" not in expiring  # expired when the registry was next used
    assert expiring.report(CommitmentReport("2.25.9", ref, ()), "PACS",
                           same_association=True) is None


class _Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def pending(self, transaction: aiodicom.PendingCommitment) -> None:
        self.events.append(("pending", transaction.transaction_uid))

    def reported(self, result: aiodicom.CommitmentResult) -> None:
        self.events.append(("reported", result.transaction_uid))

    def forget(self, transaction_uid: str) -> None:
        self.events.append(("forget", transaction_uid))


async def test_journal_sees_each_transaction_and_a_new_registry_takes_them_back(
    aiodicom_index: InstanceIndex,
) -> None:
    journal = _Journal()
    async with (
        QRServer("AIOQR", aiodicom_index) as server,
        Client(AE, peer=server.address, commitments=CommitmentRegistry(journal=journal)) as client,
    ):
        held = await _held(aiodicom_index, client, 2)
        result = await client.commit(held, timeout=30)
        uid = result.transaction_uid
        assert journal.events == [("pending", uid), ("reported", uid), ("forget", uid)]
        with pytest.raises(ValueError, match="lacks a SOP Class UID or SOP Instance UID"):
            await client.commit([("1.2.3", "")], timeout=5)
        assert len(journal.events) == 3 and len(client.commitments) == 0
    # After a restart: the pending transactions of the journal seed a new registry.
    pending = aiodicom.PendingCommitment("2.25.42", tuple(held), "AIOQR", 0.0, 4e9)
    registry = CommitmentRegistry()
    registry.restore(pending)
    report = CommitmentReport("2.25.42", tuple(held), ())
    assert registry.report(report, "AIOQR", same_association=False) is not None
    assert (await registry.wait("2.25.42", 1)).ok
