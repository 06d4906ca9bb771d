"""The embedded Q/R SCP (QRServer) against our own Client, on one event loop: C-ECHO, C-FIND at
every level, C-GET and C-MOVE into memory with the stored bytes unchanged, C-CANCEL of each,
an unknown move destination, C-STORE into the index. No external peer (see
test_qrscp_interop.py for DCMTK and pynetdicom)."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

import aiodicom
from aiodicom import Client, ContextProposal, Instance, MemorySink, Query, QueryModel, uids
from aiodicom.datasets import encode_dataset
from aiodicom.dimse import C_FIND_RQ, DimseMessage
from aiodicom.server import InstanceIndex, QRServer
from aiodicom.testing.pytest_plugin import QRScp
from aiodicom.testing.synthetic import (
    PatientSpec,
    SeriesSpec,
    StudySpec,
    synthetic_datasets,
    synthetic_instances,
)

AE = "AIOSCU"


def _stored_bytes(index: InstanceIndex, uid: str) -> bytes:
    stored = index.get(uid)
    assert stored is not None
    return bytes(index.read_data(stored))


async def test_echo_and_find_every_level(aiodicom_qrscp: QRScp) -> None:
    async with Client(AE, peer=aiodicom_qrscp.peer) as client:
        await client.echo()
        patients = await client.find(Query.patient(PatientID="")).all()
        assert len(patients) == 4
        studies = await client.find(Query.study(StudyInstanceUID="")).all()
        assert len(studies) == 6
        series = await client.find_series(PatientID="AIO-0001").all()
        assert len(series) >= 1
        images = await client.find_images(PatientID="AIO-0001").all()
        assert len(images) == 8 * len(series)
        # Patient/Study Only: the same patients and studies.
        psonly = QueryModel.PATIENT_STUDY_ONLY
        assert len(await client.find(Query.patient(model=psonly, PatientID="")).all()) == 4
        # The scenario of the demo: AX series of AIO-0001 on 20240312.
        ax = await client.find_series(
            PatientID="AIO-0001", StudyDate="20240312", SeriesDescription="AX*"
        ).all()
        assert len(ax) == 1


async def test_get_and_move_deliver_the_stored_bytes(aiodicom_qrscp: QRScp) -> None:
    index = aiodicom_qrscp.index
    async with Client(AE, peer=aiodicom_qrscp.peer, listen_port=0) as client:
        assert client.listen_port is not None
        aiodicom_qrscp.add_move_destination(AE, "127.0.0.1", client.listen_port)
        study = (await client.find(Query.study(PatientID="AIO-0001", StudyDate="20240312"))
                 .all())[0]
        query = Query.study(StudyInstanceUID=study.StudyInstanceUID)
        for retrieval in (client.get(query, sink=MemorySink()),
                          client.move(query, sink=MemorySink())):
            result = await retrieval
            assert result.status == 0 and not result.failed
            assert result.sub_operations.completed == len(result.completed) > 0
            for instance in result.instances():
                assert bytes(instance.data) == _stored_bytes(index, instance.sop_instance_uid)
            # The series loads as a volume.
            uid = result.instances()[0].dataset.SeriesInstanceUID
            assert len(result.series(uid).datasets()) == 8


async def test_unknown_move_destination_is_a801(aiodicom_qrscp: QRScp) -> None:
    async with Client(AE, peer=aiodicom_qrscp.peer) as client:
        study = (await client.find(Query.study(StudyInstanceUID="")).all())[0]
        with pytest.raises(aiodicom.MoveDestinationUnknown) as caught:
            await client.move(Query.study(StudyInstanceUID=study.StudyInstanceUID), "NOWHERE")
        assert caught.value.status == 0xA801


async def test_retrieval_matching_nothing_succeeds_with_no_sub_operations(
    aiodicom_qrscp: QRScp,
) -> None:
    async with Client(AE, peer=aiodicom_qrscp.peer) as client:
        result = await client.get(Query.study(StudyInstanceUID="1.2.3.4"))
        assert result.status == 0 and result.completed == ()
        assert result.sub_operations.completed == 0


def _big_index(slices: int) -> InstanceIndex:
    index = InstanceIndex()
    patients = (PatientSpec("AIO-C", "Cancel^Me", None, "19700101", "O", (
        StudySpec("20240101", "100000", "CANCEL", "ACC-C", "C1", "",
                  (SeriesSpec("CT", "AX", "AX", "HEAD"),)),
    )),)
    for instance in synthetic_instances(patients, rows=4, columns=4, slices=slices):
        index.store(instance)
    return index


async def test_cancel_of_find_get_and_move(aiodicom_qrscp: QRScp) -> None:
    with _big_index(400) as index:
        async with (
            QRServer("BIGQR", index) as server,
            Client(AE, peer=server.address, listen_port=0) as client,
        ):
            assert client.listen_port is not None
            server.add_move_destination(AE, "127.0.0.1", client.listen_port)
            [study] = await client.find(Query.study(StudyInstanceUID="")).all()
            [series] = await client.find(Query.series(
                StudyInstanceUID=study.StudyInstanceUID, SeriesInstanceUID="")).all()
            images = client.find(Query.image(
                StudyInstanceUID=study.StudyInstanceUID,
                SeriesInstanceUID=series.SeriesInstanceUID, SOPInstanceUID=""))
            async with images:
                async for _ in images:
                    break
            assert images.result is not None and images.result.cancelled
            query = Query.study(StudyInstanceUID=study.StudyInstanceUID)
            for retrieval in (client.get(query), client.move(query)):
                async with retrieval:
                    async for _ in retrieval:
                        break
                result = retrieval.result
                assert result is not None and result.cancelled
                assert result.status == 0xFE00, result
                assert len(result.completed) < 400
            # The server serves on after the cancels.
            assert len(await client.find(Query.study(StudyInstanceUID="")).all()) == 1


async def test_store_into_the_index(aiodicom_qrscp: QRScp) -> None:
    patients = (PatientSpec("AIO-NEW", "New^One", None, "19800101", "F", (
        StudySpec("20250101", "100000", "NEW", "ACC-N", "N1", "",
                  (SeriesSpec("MR", "AX NEW", "AX", "HEAD"),)),
    )),)
    instances = list(synthetic_instances(patients, rows=8, columns=8, slices=3))
    before = len(aiodicom_qrscp.index)
    async with Client(AE, peer=aiodicom_qrscp.peer) as client:
        result = await client.store(instances)
        assert result.ok
        assert len(aiodicom_qrscp.index) == before + 3
        for instance in instances:
            assert _stored_bytes(aiodicom_qrscp.index, instance.sop_instance_uid) == bytes(
                instance.data)
        found = await client.find(Query.patient(PatientID="AIO-NEW")).all()
        assert len(found) == 1


async def test_server_and_client_share_the_loop_with_a_find_in_progress(
    aiodicom_qrscp: QRScp,
) -> None:
    # Two concurrent associations each running a C-FIND: the server serves both at once.
    counts: list[int] = []
    async with Client(AE, peer=aiodicom_qrscp.peer) as client:

        async def one() -> None:
            counts.append(len(await client.find(Query.study(StudyInstanceUID="")).all()))

        async with anyio.create_task_group() as tasks:
            for _ in range(4):
                tasks.start_soon(one)
    assert counts == [6] * 4



async def test_move_to_an_unreachable_destination_fails_every_sub_operation(
    aiodicom_qrscp: QRScp,
) -> None:
    # A known destination nobody listens on: no sub-operation can be performed (A702).
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    aiodicom_qrscp.add_move_destination("GONE", "127.0.0.1", port)
    async with Client(AE, peer=aiodicom_qrscp.peer) as client:
        study = (await client.find(Query.study(PatientID="AIO-0002")).all())[0]
        with pytest.raises(aiodicom.RetrieveError) as caught:
            await client.move(Query.study(StudyInstanceUID=study.StudyInstanceUID), "GONE")
        result = caught.value.result
        assert result.status == 0xA702
        assert result.sub_operations.failed == 16 and result.sub_operations.completed == 0


async def test_serve_forever_until_cancelled(aiodicom_index: InstanceIndex) -> None:
    server = QRServer("FOREVER", aiodicom_index)
    async with anyio.create_task_group() as tasks:
        port = await tasks.start(server.serve_forever)
        async with Client(AE, peer=("127.0.0.1", port, "FOREVER")) as client:
            await client.echo()
            assert len(await client.find(Query.study(StudyInstanceUID="")).all()) == 6
        tasks.cancel_scope.cancel()
    with pytest.raises(OSError):  # nobody listens any more
        await anyio.connect_tcp("127.0.0.1", port)


async def test_a_second_request_while_one_runs_is_refused_0213(aiodicom_qrscp: QRScp) -> None:
    # No asynchronous operations window is granted: one operation at a time per association.
    # Two C-FIND-RQs sent back to back: the second is refused at once, the first answered.
    uid = uids.STUDY_ROOT_FIND
    async with Client(AE) as client:
        peer = client.peer(*aiodicom_qrscp.peer)
        async with peer.associate([ContextProposal(uid, (uids.EXPLICIT_VR_LE,))]) as session:
            association = session.association
            context = association.context(uid)
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = ""
            data = encode_dataset(identifier, uids.EXPLICIT_VR_LE)
            for message_id in (1, 2):
                await association.send_message(DimseMessage(context.context_id, {
                    "CommandField": C_FIND_RQ, "MessageID": message_id,
                    "AffectedSOPClassUID": uid, "Priority": 0,
                }, data))
            statuses: dict[int, list[int]] = {1: [], 2: []}
            with anyio.fail_after(10):
                while not statuses[2] or not statuses[1] or statuses[1][-1] == 0xFF00:
                    response = await association.receive_message()
                    assert response is not None
                    statuses[response.message_id_being_responded_to or 0].append(
                        response.status_code)
    assert statuses[2] == [0x0213]
    assert statuses[1] == [0xFF00] * 6 + [0x0000]


async def test_compressed_instances_go_as_stored_by_get_and_move() -> None:
    # RLE Lossless in the index: the C-MOVE proposes exactly that syntax to the destination,
    # the C-GET finds our Client's RLE storage context; the bytes arrive as stored.
    pytest.importorskip("numpy")
    patients = (PatientSpec("AIO-RLE", "Rle^Pat", None, "19800101", "F", (
        StudySpec("20250101", "100000", "RLE", "ACC-R", "R1", "",
                  (SeriesSpec("MR", "AX RLE", "AX", "HEAD"),)),
    )),)
    with InstanceIndex() as index:
        for ds in synthetic_datasets(patients, rows=8, columns=8, slices=3):
            ds.compress(RLELossless)
            index.store(Instance(str(ds.SOPClassUID), str(ds.SOPInstanceUID), RLELossless,
                                 encode_dataset(ds, RLELossless)))
        async with (
            QRServer("RLEQR", index) as server,
            Client(AE, peer=server.address, listen_port=0) as client,
        ):
            assert client.listen_port is not None
            server.add_move_destination(AE, "127.0.0.1", client.listen_port)
            [study] = await client.find(Query.study(StudyInstanceUID="")).all()
            query = Query.study(StudyInstanceUID=study.StudyInstanceUID)
            for retrieval in (client.get(query), client.move(query)):
                result = await retrieval
                assert result.status == 0 and len(result.completed) == 3, result
                for instance in result.instances():
                    assert instance.transfer_syntax_uid == RLELossless
                    assert bytes(instance.data) == _stored_bytes(index, instance.sop_instance_uid)


async def test_a_move_keeps_large_data_sets_as_its_sink_does_unexpected_ones_wait_in_a_file(
    aiodicom_qrscp: QRScp,
) -> None:
    """A data set past Limits.max_data_set_memory that one of our C-MOVEs asked for goes to
    its MemorySink in memory, as a C-GET's does; one nobody asked for waits in a temporary
    file (mapped back in), so that a stranger cannot make the storage SCP hold it in memory."""
    import mmap

    limits = aiodicom.Limits(max_data_set_memory=1024)
    unexpected = MemorySink()
    async with Client(AE, peer=aiodicom_qrscp.peer, listen_port=0, limits=limits,
                      unexpected_deliveries=unexpected) as client:
        assert client.listen_port is not None
        aiodicom_qrscp.add_move_destination(AE, "127.0.0.1", client.listen_port)
        study = (await client.find(Query.study(PatientID="AIO-0001")).all())[0]
        result = await client.move(
            Query.study(StudyInstanceUID=study.StudyInstanceUID), sink=MemorySink()
        )
        moved = result.instances()
        assert moved and all(memoryview(i.data).nbytes > 1024 for i in moved)
        assert not any(isinstance(memoryview(i.data).obj, mmap.mmap) for i in moved)
        # The same instance sent to us unasked: past the limit, from a temporary file.
        stored = await client.peer("127.0.0.1", client.listen_port, AE).store([moved[0]])
        assert stored.ok
        (kept,) = unexpected.instances.values()
        assert isinstance(memoryview(kept.data).obj, mmap.mmap)
        assert bytes(kept.data) == bytes(moved[0].data)
