"""C-MOVE and C-GET against DCMTK dcmqrscp and Orthanc: the acceptance tests of retrieval.

Every dcmqrscp here comes from ``dcmqrscp_factory`` with our acceptor in its HostTable; Orthanc
is the session one with our acceptor as a temporary modality, or one of its own where data
must be stored. Instances are compared with the data set bytes of the files the peers serve.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from peers import LOOPBACK, in_thread, require_executable
from peers.corpus import Corpus, InstanceInfo, compressed_copy, derive_uid
from peers.dcmtk import DcmQrScp, storescu
from peers.orthanc import ORTHANC, Orthanc
from pydicom import Dataset, dcmread
from pydicom.uid import JPEGLosslessSV1, RLELossless

import aiodicom
from aiodicom.buffer import MAX_PREFERRED_SIZE
from aiodicom.fileio import split_part10
from aiodicom.instance import Instance
from aiodicom.query import Query
from aiodicom.services.get_contexts import get_proposals
from aiodicom.services.retrieve import (
    InstanceArrived,
    MoveDestinationUnknown,
    Progress,
    Retrieval,
    RetrieveError,
    RetrieveResult,
)
from aiodicom.sinks import DirectorySink, MemorySink

AE = "AIOSCU"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
PEERS = ("dcmqrscp", "orthanc")
KINDS = ("move", "get")


def stored_bytes(info: InstanceInfo) -> bytes:
    """The data set bytes of the file a peer serves (everything after File Meta)."""
    return bytes(split_part10(info.path.read_bytes())[1])


@asynccontextmanager
async def connected(
    which: str,
    dcmqrscp_factory: Callable[..., DcmQrScp],
    orthanc: Orthanc | None,
    **client_args: Any,
) -> AsyncIterator[tuple[aiodicom.Client, aiodicom.Peer]]:
    """A client with its acceptor, and a PACS that knows it as a move destination."""
    async with aiodicom.Client(AE, listen_port=0, **client_args) as client:
        assert client.listen_port is not None
        if which == "dcmqrscp":
            qr = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, client.listen_port)])
            yield client, client.peer(qr.host, qr.port, qr.ae_title)
        else:
            assert orthanc is not None
            with orthanc.temporary_modality(AE, AE, LOOPBACK, client.listen_port):
                yield client, client.peer(orthanc.host, orthanc.port, orthanc.ae_title)


@pytest.fixture
def pacs_orthanc(request: pytest.FixtureRequest) -> Orthanc | None:
    """The session Orthanc, started only for the Orthanc variants of a test."""
    if "orthanc" in request.node.callspec.params.values():
        return request.getfixturevalue("orthanc")  # type: ignore[no-any-return]
    return None


def retrieve(peer: aiodicom.Peer, kind: str, query: Query | Dataset, **kwargs: Any) -> Retrieval:
    return peer.move(query, **kwargs) if kind == "move" else peer.get(query, **kwargs)


def assert_arrived(
    result: RetrieveResult, expected: Sequence[InstanceInfo], sink: MemorySink | None = None
) -> None:
    """Exactly ``expected`` arrived, byte for byte, and the peer counted the same."""
    uids = [info.sop_instance_uid for info in expected]
    assert sorted(result.completed) == sorted(uids)
    assert result.status == 0x0000 and result.ok and not result.failed and not result.cancelled
    assert result.sub_operations.completed == len(uids)
    assert not result.sub_operations.failed
    memory = sink if sink is not None else result.sink
    assert isinstance(memory, MemorySink)
    total = 0
    for info in expected:
        instance = memory.instances[info.sop_instance_uid]
        assert bytes(instance.data) == stored_bytes(info)
        assert instance.transfer_syntax_uid == info.transfer_syntax_uid
        assert instance.sop_class_uid == info.sop_class_uid
        total += len(memoryview(instance.data))
    assert result.bytes_received == total


# ---------------------------------------------------------------------------------------------
# Study, series, single instances
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", PEERS)
async def test_study_series_and_instances_arrive_unchanged(
    which: str, kind: str, dcmqrscp_factory: Callable[..., DcmQrScp],
    pacs_orthanc: Orthanc | None, corpus: Corpus,
) -> None:
    study = corpus.studies[1]  # two series, eight instances
    series = study.series[1]
    async with connected(which, dcmqrscp_factory, pacs_orthanc) as (_, peer):
        result = await retrieve(peer, kind, Query.study(StudyInstanceUID=study.study_instance_uid))
        assert_arrived(result, study.instances)
        assert {i.source_ae_title for i in result.instances()} == {peer.ae_title}

        result = await retrieve(peer, kind, Query.series(
            StudyInstanceUID=study.study_instance_uid, SeriesInstanceUID=series.series_instance_uid
        ))
        assert_arrived(result, series.instances)

        # dcmqrscp is strictly hierarchical: an IMAGE retrieve names the study and series too.
        one, two = series.instances[0], series.instances[2]
        result = await retrieve(peer, kind, Query.image(
            StudyInstanceUID=study.study_instance_uid,
            SeriesInstanceUID=series.series_instance_uid,
            SOPInstanceUID=one.sop_instance_uid,
        ))
        assert_arrived(result, [one])
        result = await retrieve(peer, kind, Query.image(
            StudyInstanceUID=study.study_instance_uid,
            SeriesInstanceUID=series.series_instance_uid,
            SOPInstanceUID=[one.sop_instance_uid, two.sop_instance_uid],
        ))
        assert_arrived(result, [one, two])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", PEERS)
async def test_progress_events_then_result(
    which: str, kind: str, dcmqrscp_factory: Callable[..., DcmQrScp],
    pacs_orthanc: Orthanc | None, corpus: Corpus,
) -> None:
    series = corpus.series[0]
    query = Query.series(
        StudyInstanceUID=series.study_instance_uid, SeriesInstanceUID=series.series_instance_uid
    )
    async with connected(which, dcmqrscp_factory, pacs_orthanc) as (_, peer):
        events: list[Any] = []
        async with retrieve(peer, kind, query) as r:
            async for event in r:
                events.append(event)
        assert r.result is not None
        assert_arrived(r.result, series.instances)

    arrived = [e.instance.sop_instance_uid for e in events if isinstance(e, InstanceArrived)]
    assert arrived == list(r.result.completed)
    progress = [e for e in events if isinstance(e, Progress)]
    # Pending responses are optional (PS3.4 C.4.2.1.5); both peers send them, remaining
    # counting down as completed counts up.
    assert progress
    assert all(p.remaining is not None for p in progress)
    remaining = [p.remaining for p in progress]
    assert remaining == sorted(remaining, reverse=True)
    completed = [p.completed for p in progress]
    assert completed == sorted(completed)  # type: ignore[type-var]
    assert all(p.remaining + p.completed == len(series.instances)  # type: ignore[operator]
               for p in progress)


def _expected_volume(series: Any) -> Any:
    np = pytest.importorskip("numpy")
    slices = sorted(series.instances, key=lambda i: i.image_position[2])
    volumes = []
    for info in slices:
        ds = dcmread(info.path)
        volumes.append(ds.pixel_array * float(ds.get("RescaleSlope", 1))
                       + float(ds.get("RescaleIntercept", 0)))
    return np.stack(volumes), slices


def _assert_image(image: Any, series: Any) -> None:
    sitk = pytest.importorskip("SimpleITK")
    np = pytest.importorskip("numpy")
    expected, slices = _expected_volume(series)
    assert image.GetSize() == (64, 64, len(slices))
    assert image.GetSpacing() == pytest.approx((0.5, 0.5, 2.0))
    assert image.GetOrigin() == pytest.approx(slices[0].image_position)
    assert np.array_equal(sitk.GetArrayFromImage(image), expected)


async def test_readme_find_series_then_retrieve_as_sitk_image(
    orthanc: Orthanc, dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus,
    tmp_path: Path,
) -> None:
    pytest.importorskip("SimpleITK")
    patient = corpus.patient("AIO0001")
    wanted = {
        s.series_instance_uid: s for s in patient.series if s.series_description.startswith("AX")
    }
    assert len(wanted) == 2  # AX CT and AX T1, in two studies of January 2024
    # As in the README: a client with an acceptor retrieves by C-MOVE.
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        with orthanc.temporary_modality(AE, AE, LOOPBACK, client.listen_port):
            pacs = client.peer(orthanc.host, orthanc.port, orthanc.ae_title)
            seen = []
            async for match in pacs.find_series(
                PatientID="AIO0001", StudyDate="20240101-20240131", SeriesDescription="AX*"
            ):
                result = await pacs.retrieve(match)
                image = result.series().to_sitk()
                _assert_image(image, wanted[match.SeriesInstanceUID])
                seen.append(match.SeriesInstanceUID)
    assert sorted(seen) == sorted(wanted)

    # Without an acceptor it is a C-GET; into files, read back for the image.
    qr = dcmqrscp_factory()
    async with aiodicom.Client(AE) as client:
        pacs = client.peer(qr.host, qr.port, qr.ae_title)
        ct = next(s for s in wanted.values() if s.modality == "CT")
        matches = await pacs.find_series(PatientID="AIO0001", Modality="CT").all()
        assert [m.SeriesInstanceUID for m in matches] == [ct.series_instance_uid]
        result = await pacs.get(matches[0], sink=DirectorySink(tmp_path))
    _assert_image(result.series().to_sitk(), ct)
    assert isinstance(result.sink, DirectorySink) and len(result.sink) == len(ct.instances)


# ---------------------------------------------------------------------------------------------
# Move destination unknown
# ---------------------------------------------------------------------------------------------


async def test_unknown_destination_dcmqrscp(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    qr = dcmqrscp_factory()  # an empty HostTable
    study = corpus.studies[0]
    async with aiodicom.Client(AE, listen_port=0) as client:
        with pytest.raises(MoveDestinationUnknown) as caught:
            await client.peer(qr.host, qr.port, qr.ae_title).move(
                Query.study(StudyInstanceUID=study.study_instance_uid)
            )
    error = caught.value
    assert error.result.status == 0xA801 and not error.result.completed
    message = str(error)
    assert "does not know the AE title 'AIOSCU'" in message
    assert f"host 127.0.0.1 and port {client.listen_port}" in message and "HostTable" in message


async def test_unknown_destination_orthanc(orthanc: Orthanc, corpus: Corpus) -> None:
    study = corpus.studies[0]
    async with aiodicom.Client(AE, listen_port=0) as client:
        peer = client.peer(orthanc.host, orthanc.port, orthanc.ae_title)
        with pytest.raises(MoveDestinationUnknown) as caught:
            await peer.move(Query.study(StudyInstanceUID=study.study_instance_uid))
        # Orthanc answers an identifier that matches nothing the same bare way: that is not
        # blamed on the destination.
        with (
            orthanc.temporary_modality(AE, AE, LOOPBACK, client.listen_port or 0),
            pytest.raises(RetrieveError) as nothing,
        ):
            await peer.move(Query.study(StudyInstanceUID="1.2.826.0.1.3680043.2.1143.999"))
    error = caught.value
    assert error.result.status == 0xC000 and error.result.error_comment is None
    message = str(error)
    assert "does not know the move destination 'AIOSCU'" in message
    assert f"port {client.listen_port}" in message and "DicomModalities" in message
    assert not isinstance(nothing.value, MoveDestinationUnknown)
    assert "holds nothing matching" in str(nothing.value)


# ---------------------------------------------------------------------------------------------
# Several moves at once on one event loop
# ---------------------------------------------------------------------------------------------


GUARD = 30.0
"""Seconds a test sink waits for the others before giving up: a hang guard, never a measure."""


class Barrier:
    """Wraps a MemorySink per retrieval; each retrieval's first instance waits until every
    retrieval has one, so the deliveries certainly overlap at our acceptor."""

    def __init__(self, parties: int) -> None:
        self.parties, self.arrived, self.all_in = parties, 0, anyio.Event()
        self.memories: list[MemorySink] = []
        self.gave_up = False

    def sink(self) -> Callable[[Instance], Awaitable[None]]:
        memory = MemorySink()
        self.memories.append(memory)

        async def deliver(instance: Instance) -> None:
            if not memory.instances:
                self.arrived += 1
                if self.arrived == self.parties:
                    self.all_in.set()
                with anyio.move_on_after(GUARD) as guard:
                    await self.all_in.wait()
                self.gave_up |= guard.cancelled_caught
            await memory(instance)

        return deliver


async def _run_all(retrievals: Sequence[Retrieval]) -> list[RetrieveResult]:
    results: list[RetrieveResult | None] = [None] * len(retrievals)

    async def run(index: int) -> None:
        results[index] = await retrievals[index]

    async with anyio.create_task_group() as tg:
        for index in range(len(retrievals)):
            tg.start_soon(run, index)
    return [r for r in results if r is not None]


async def test_two_pacs_move_the_same_study_at_once(
    dcmqrscp_factory: Callable[..., DcmQrScp], orthanc: Orthanc, corpus: Corpus
) -> None:
    study = corpus.studies[1]
    query = Query.study(StudyInstanceUID=study.study_instance_uid)
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        qr = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, client.listen_port)])
        with orthanc.temporary_modality(AE, AE, LOOPBACK, client.listen_port):
            barrier = Barrier(2)
            pacs = [client.peer(qr.host, qr.port, qr.ae_title),
                    client.peer(orthanc.host, orthanc.port, orthanc.ae_title)]
            results = await _run_all([p.move(query, sink=barrier.sink()) for p in pacs])

    assert not barrier.gave_up
    # The same UIDs from both: only the Move Originator Message ID tells them apart.
    for peer, result, memory in zip(pacs, results, barrier.memories, strict=True):
        assert_arrived(result, study.instances, memory)
        assert {i.source_ae_title for i in memory} == {peer.ae_title}


async def test_three_moves_from_one_pacs_at_once(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    studies = [corpus.studies[0], corpus.studies[1], corpus.studies[1]]
    move_uid = Query.study(StudyInstanceUID="1.2.3").sop_class_uid("move")
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        qr = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, client.listen_port)])
        peer = client.peer(qr.host, qr.port, qr.ae_title)
        barrier = Barrier(len(studies))
        async with AsyncExitStack() as stack:
            # Associations first, each answering a C-ECHO: the dcmqrscp child serving an
            # association locks the index exclusively before its first command, and a C-MOVE
            # holds it shared to the end; a child starting while a move is held up would wait.
            proposals = [aiodicom.ContextProposal(VERIFICATION, (EXPLICIT_LE,)),
                         aiodicom.ContextProposal(move_uid, (EXPLICIT_LE,))]
            sessions = [
                await stack.enter_async_context(peer.associate(proposals)) for _ in studies
            ]
            for session in sessions:
                await session.echo()
            results = await _run_all([
                session.move(Query.study(StudyInstanceUID=study.study_instance_uid),
                             sink=barrier.sink())
                for session, study in zip(sessions, studies, strict=True)
            ])
        assert client._router.active == 0
    assert not barrier.gave_up
    for study, result, memory in zip(studies, results, barrier.memories, strict=True):
        assert_arrived(result, study.instances, memory)


# ---------------------------------------------------------------------------------------------
# Compressed series
# ---------------------------------------------------------------------------------------------


async def test_compressed_series_arrive_unchanged(
    dcmqrscp_factory: Callable[..., DcmQrScp], orthanc_factory: Callable[..., Orthanc],
    corpus: Corpus, tmp_path: Path,
) -> None:
    # dcmqrscp cannot transcode, proposes (-x) one compressed syntax besides the uncompressed
    # ones for its sub-operations, and accepts (+x) that one for C-GET storage contexts.
    dcmtk_options = {RLELossless: ["+xr", "-xr"], JPEGLosslessSV1: ["+xs", "-xs"]}
    copies = {
        ts: compressed_copy(corpus.series[0], tmp_path / ts.name.replace(" ", "_"), ts,
                            new_uids=ts.name)
        for ts in dcmtk_options
    }
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        destination = (AE, LOOPBACK, client.listen_port)
        orthanc = orthanc_factory(modalities={AE: destination}, load_corpus=False)
        pacs: list[tuple[aiodicom.Peer, Any, str]] = []
        for ts, series in copies.items():
            orthanc.upload(series.instances)
            qr = dcmqrscp_factory(move_destinations=[destination], load_corpus=False,
                                  extra_args=dcmtk_options[ts])
            qr.load(series.instances)
            pacs.append((client.peer(qr.host, qr.port, qr.ae_title), series, ts))
            pacs.append((client.peer(orthanc.host, orthanc.port, orthanc.ae_title), series, ts))
        for peer, series, ts in pacs:
            query = Query.series(StudyInstanceUID=series.study_instance_uid,
                                 SeriesInstanceUID=series.series_instance_uid)
            moved = await peer.move(query)
            assert_arrived(moved, series.instances)
            # dcmqrscp 3.6.7 sends each instance on the first context accepted for its SOP
            # class: propose the stored syntax alone. Orthanc picks among ours by itself.
            syntaxes = (ts,) if peer.ae_title == "QRSCP" else None
            got = await peer.get(query, transfer_syntaxes=syntaxes)
            assert_arrived(got, series.instances)
            assert {i.transfer_syntax_uid for i in got.instances()} == {ts}


# ---------------------------------------------------------------------------------------------
# A bigger series: streaming, cancel, abort
# ---------------------------------------------------------------------------------------------

BIG_COUNT = 40
BIG_ROWS, BIG_COLUMNS = 512, 1024  # 1 MiB of pixel data per instance


@pytest.fixture(scope="module")
def big_series(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> list[InstanceInfo]:
    """40 CT instances of 1 MiB each in a study of their own (built here: the corpus generator
    computes pixels in pure Python, too slow for tens of megabytes)."""
    directory = tmp_path_factory.mktemp("big")
    template = corpus.series_with(modality="CT")[0].instances[0]
    ds = dcmread(template.path)
    study, series = derive_uid("retrieve-big/study"), derive_uid("retrieve-big/series")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Rows, ds.Columns = BIG_ROWS, BIG_COLUMNS
    infos = []
    for index in range(BIG_COUNT):
        uid = derive_uid(f"retrieve-big/{index}")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = index + 1
        position = (0.0, 0.0, 2.0 * index)
        ds.ImagePositionPatient = [str(v) for v in position]
        ds.PixelData = bytes((index + k) % 251 for k in range(251)) * (
            BIG_ROWS * BIG_COLUMNS * 2 // 251) + bytes(BIG_ROWS * BIG_COLUMNS * 2 % 251)
        path = directory / f"IM{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        infos.append(InstanceInfo(
            sop_class_uid=template.sop_class_uid, sop_instance_uid=uid,
            instance_number=index + 1, path=path,
            transfer_syntax_uid=template.transfer_syntax_uid, series_instance_uid=series,
            study_instance_uid=study, patient_id=template.patient_id, image_position=position,
            image_orientation=template.image_orientation,
        ))
    return infos


def _big_query(big: Sequence[InstanceInfo]) -> Query:
    return Query.series(StudyInstanceUID=big[0].study_instance_uid,
                        SeriesInstanceUID=big[0].series_instance_uid)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _assert_directory_matches(directory: Path, result: RetrieveResult,
                              big: Sequence[InstanceInfo]) -> None:
    """Exactly the completed instances are on disk, whole, and no temporary file is left."""
    files = _files(directory)
    assert not [p for p in files if p.name.startswith(".") or not p.name.endswith(".dcm")]
    assert sorted(p.stem for p in files) == sorted(result.completed)
    by_uid = {info.sop_instance_uid: info for info in big}
    for path in files:
        assert bytes(split_part10(path.read_bytes())[1]) == stored_bytes(by_uid[path.stem])


async def test_streaming_to_a_directory_does_not_hold_the_series(
    dcmqrscp_factory: Callable[..., DcmQrScp], big_series: list[InstanceInfo], tmp_path: Path
) -> None:
    qr = dcmqrscp_factory(load_corpus=False)
    qr.load(big_series)
    series_bytes = sum(len(stored_bytes(i)) for i in big_series)
    peaks: dict[str, int] = {}
    results: dict[str, RetrieveResult] = {}
    copies: list[bytes] = []

    async def copy_each(instance: Instance) -> None:
        # A MemorySink's large data sets live in memory files, which tracemalloc does not see:
        # copies into bytes show that the measurement sees what a sink keeps.
        copies.append(bytes(instance.data))

    async with aiodicom.Client(AE) as client:
        peer = client.peer(qr.host, qr.port, qr.ae_title)
        for name, sink in (
            ("directory", DirectorySink(tmp_path, memory_limit=64 * 1024)),
            ("memory", copy_each),
        ):
            tracemalloc.start()
            try:
                results[name] = await peer.get(_big_query(big_series), sink=sink)
                peaks[name] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    for result in results.values():
        assert len(result.completed) == BIG_COUNT and result.bytes_received == series_bytes
    # Data sets go from the receive buffer to their files as they arrive: what is held is the
    # connection's receive buffer (MAX_PREFERRED_SIZE, twice while it grows), whatever the size
    # of an object.
    assert peaks["directory"] < 2 * MAX_PREFERRED_SIZE + 256 * 1024
    assert peaks["memory"] > series_bytes  # the measurement does see what is kept
    _assert_directory_matches(tmp_path, results["directory"], big_series)


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files are Linux's")
@pytest.mark.parametrize("kind", KINDS)
async def test_memory_retrieval_keeps_large_data_sets_in_memory_files(
    kind: str, dcmqrscp_factory: Callable[..., DcmQrScp], big_series: list[InstanceInfo],
    request: pytest.FixtureRequest,
) -> None:
    """A MemorySink's data sets above 64 KiB go from the receive buffer into a file that lives
    in memory (memfd) as they arrive, and come out as a read-only mapping of it: whole, equal
    to what the peer stored, and never on the Python heap, whose fresh pages each cost a page
    fault when first written."""
    series_bytes = sum(len(stored_bytes(i)) for i in big_series)
    sink = MemorySink()
    async with aiodicom.Client(AE, listen_port=0) as client, \
            big_pacs("dcmqrscp", client, dcmqrscp_factory, request, big_series) as peer:
        tracemalloc.start()
        try:
            async with retrieve(peer, kind, _big_query(big_series), sink=sink) as retrieval:
                async for _event in retrieval:
                    pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    result = retrieval.result
    assert result is not None and result.ok and len(result.completed) == BIG_COUNT
    assert result.bytes_received == series_bytes
    assert peak < series_bytes / 4
    by_uid = {info.sop_instance_uid: info for info in big_series}
    for uid, instance in sink.instances.items():
        data = instance.data
        assert isinstance(data, memoryview) and data.readonly
        assert bytes(data) == stored_bytes(by_uid[uid])
    assert sink.instances[big_series[0].sop_instance_uid].dataset.SOPInstanceUID == (
        big_series[0].sop_instance_uid
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", PEERS)
async def test_directory_sink_receives_straight_to_disk(
    which: str, kind: str, dcmqrscp_factory: Callable[..., DcmQrScp],
    big_series: list[InstanceInfo], tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """C-GET, and C-MOVE deliveries that name their C-MOVE (Move Originator Message ID), are
    written to a temporary file while they arrive and renamed into place."""
    spooled: list[bool] = []
    async with aiodicom.Client(AE, listen_port=0) as client, \
            big_pacs(which, client, dcmqrscp_factory, request, big_series) as peer:
        tracemalloc.start()
        try:
            # A limit below the objects' size: each goes to disk as it arrives.
            sink = DirectorySink(tmp_path, memory_limit=64 * 1024)
            async with retrieve(peer, kind, _big_query(big_series), sink=sink) as retrieval:
                async for event in retrieval:
                    if isinstance(event, InstanceArrived):
                        spool = event.instance.spool
                        spooled.append(spool is not None and spool.on_disk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    result = retrieval.result
    assert result is not None and result.ok and len(result.completed) == BIG_COUNT
    assert spooled == [True] * BIG_COUNT
    assert peak < 2 * MAX_PREFERRED_SIZE + 256 * 1024
    _assert_directory_matches(tmp_path, result, big_series)


async def test_disk_full_while_spooling_fails_that_instance_only(
    dcmqrscp_factory: Callable[..., DcmQrScp], big_series: list[InstanceInfo], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write error while a data set streams to disk: that C-STORE is refused with 0xA700,
    its temporary file removed, and the retrieval goes on and reports it."""
    import errno

    import aiodicom.spool

    written = aiodicom.spool.write_all
    victim = big_series[3].sop_instance_uid
    state = {"writes": 0, "current": ""}
    real_open_spool = DirectorySink.open_spool

    def open_spool(self: DirectorySink, sop_class_uid: str, sop_instance_uid: str,
                   *args: Any) -> Any:
        state["current"], state["writes"] = sop_instance_uid, 0
        return real_open_spool(self, sop_class_uid, sop_instance_uid, *args)

    def failing_write_all(fd: int, chunks: list[memoryview]) -> None:
        state["writes"] += 1
        if state["current"] == victim and state["writes"] == 3:  # mid-data set
            raise OSError(errno.ENOSPC, "No space left on device")
        written(fd, chunks)

    monkeypatch.setattr(DirectorySink, "open_spool", open_spool)
    monkeypatch.setattr(aiodicom.spool, "write_all", failing_write_all)
    qr = dcmqrscp_factory(load_corpus=False)
    qr.load(big_series)
    async with aiodicom.Client(AE) as client:
        peer = client.peer(qr.host, qr.port, qr.ae_title)
        result = await peer.get(
            _big_query(big_series), sink=DirectorySink(tmp_path, memory_limit=64 * 1024)
        )
    assert result.status == 0xB000  # warning: sub-operations complete, one or more failed
    assert victim in result.failed
    assert sorted(result.completed) == sorted(
        i.sop_instance_uid for i in big_series if i.sop_instance_uid != victim
    )
    assert result.sub_operations.failed == 1
    _assert_directory_matches(tmp_path, result, big_series)


class Pause:
    """A DirectorySink that stops at its ``at``-th instance until released."""

    def __init__(self, directory: Path, at: int) -> None:
        self.directory = DirectorySink(directory)
        self.at, self.count = at, 0
        self.reached, self.release = anyio.Event(), anyio.Event()
        self.gave_up = False

    async def __call__(self, instance: Instance) -> None:
        self.count += 1
        if self.count == self.at:
            self.reached.set()
            with anyio.move_on_after(GUARD) as guard:
                await self.release.wait()
            self.gave_up = guard.cancelled_caught
        await self.directory(instance)


@pytest.fixture(scope="module")
def big_orthanc(
    tmp_path_factory: pytest.TempPathFactory, big_series: list[InstanceInfo]
) -> Iterator[Orthanc]:
    """An Orthanc of this module's own holding only the big series."""
    require_executable(ORTHANC)
    server = Orthanc(tmp_path_factory.mktemp("orthanc_big"))
    server.start()
    try:
        server.upload(big_series)
        yield server
    finally:
        server.stop(wait=False)


@asynccontextmanager
async def big_pacs(
    which: str, client: aiodicom.Client, dcmqrscp_factory: Callable[..., DcmQrScp],
    request: pytest.FixtureRequest, big: Sequence[InstanceInfo],
) -> AsyncIterator[aiodicom.Peer]:
    assert client.listen_port is not None
    if which == "dcmqrscp":
        qr = dcmqrscp_factory(
            move_destinations=[(AE, LOOPBACK, client.listen_port)], load_corpus=False
        )
        qr.load(big)
        yield client.peer(qr.host, qr.port, qr.ae_title)
    else:
        orthanc: Orthanc = request.getfixturevalue("big_orthanc")
        with orthanc.temporary_modality(AE, AE, LOOPBACK, client.listen_port):
            yield client.peer(orthanc.host, orthanc.port, orthanc.ae_title)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", PEERS)
async def test_leaving_async_with_early_cancels(
    which: str, kind: str, dcmqrscp_factory: Callable[..., DcmQrScp],
    big_series: list[InstanceInfo], tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    stop_after = 3
    async with aiodicom.Client(AE, listen_port=0) as client, \
            big_pacs(which, client, dcmqrscp_factory, request, big_series) as peer:
        sink = DirectorySink(tmp_path)
        seen = 0
        async with retrieve(peer, kind, _big_query(big_series), sink=sink) as r:
            async for event in r:
                if isinstance(event, InstanceArrived):
                    seen += 1
                    if seen == stop_after:
                        break
        result = r.result
        assert result is not None
        assert client._router.active == 0
        # The PACS serves the next request as usual.
        again = await peer.get(Query.image(
            StudyInstanceUID=big_series[0].study_instance_uid,
            SeriesInstanceUID=big_series[0].series_instance_uid,
            SOPInstanceUID=big_series[-1].sop_instance_uid,
        ))
        assert again.completed == (big_series[-1].sop_instance_uid,)

    assert result.cancelled and result.status == 0xFE00 and not result.ok
    assert stop_after <= len(result.completed) < BIG_COUNT
    # Orthanc may count one fewer than it sent (the one in flight when it saw the cancel).
    assert (result.sub_operations.completed or 0) <= len(result.completed)
    _assert_directory_matches(tmp_path, result, big_series)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", PEERS)
async def test_cancelled_task_cancels_the_retrieval(
    which: str, kind: str, dcmqrscp_factory: Callable[..., DcmQrScp],
    big_series: list[InstanceInfo], tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    sink = Pause(tmp_path, at=4)
    async with aiodicom.Client(AE, listen_port=0) as client, \
            big_pacs(which, client, dcmqrscp_factory, request, big_series) as peer:
        retrieval = retrieve(peer, kind, _big_query(big_series), sink=sink)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_await, retrieval)
            await sink.reached.wait()
            tg.cancel_scope.cancel()
            sink.release.set()

    result = retrieval.result
    assert result is not None and result.cancelled and not sink.gave_up
    assert 4 <= len(result.completed) < BIG_COUNT
    _assert_directory_matches(tmp_path, result, big_series)


async def _await(retrieval: Retrieval) -> None:
    await retrieval


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command may hold spaces: the fields after its closing parenthesis count.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def test_pacs_killed_mid_move_leaves_what_arrived(
    dcmqrscp_factory: Callable[..., DcmQrScp], big_series: list[InstanceInfo], tmp_path: Path
) -> None:
    sink = Pause(tmp_path, at=5)
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        qr = dcmqrscp_factory(
            move_destinations=[(AE, LOOPBACK, client.listen_port)], load_corpus=False
        )
        qr.load(big_series)
        retrieval = client.peer(qr.host, qr.port, qr.ae_title).move(
            _big_query(big_series), sink=sink
        )
        errors: list[BaseException] = []

        async def run() -> None:
            try:
                await retrieval
            except RetrieveError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await sink.reached.wait()
            assert qr.pid is not None
            # dcmqrscp --fork serves our association in a child of the process we started.
            for child in _children(qr.pid):
                os.kill(child, signal.SIGKILL)
            sink.release.set()

    assert len(errors) == 1 and isinstance(errors[0], RetrieveError) and not sink.gave_up
    error = errors[0]
    result = error.result
    assert result.interrupted is not None and "interrupted" in str(error)
    assert len(result.completed) == 5  # the fifth was whole when the sender died
    assert [i.sop_instance_uid for i in big_series[:5]] == list(result.completed)
    assert not result.ok and not result.cancelled
    _assert_directory_matches(tmp_path, result, big_series)


# ---------------------------------------------------------------------------------------------
# Deliveries nobody asked for
# ---------------------------------------------------------------------------------------------


async def test_unexpected_deliveries_are_refused_or_handed_over(
    corpus: Corpus, dcmqrscp_factory: Callable[..., DcmQrScp], tmp_path: Path,
) -> None:
    files = corpus.series[4].instances[:2]

    def send() -> Any:
        return storescu(LOOPBACK, port, AE, files, args=["-v"])

    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        port = client.listen_port
        refused = await in_thread(send)
        assert refused.returncode != 0 and "Status: 0x124" in refused.stderr

        # While a move is active, a stray delivery of another study is refused all the same.
        qr = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, port)])
        study = corpus.studies[0]
        sink = Pause(tmp_path, at=1)
        results: list[RetrieveResult] = []

        async def run() -> None:
            results.append(await client.peer(qr.host, qr.port, qr.ae_title).move(
                Query.study(StudyInstanceUID=study.study_instance_uid), sink=sink
            ))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await sink.reached.wait()
            during = await in_thread(send)
            sink.release.set()
        assert during.returncode != 0 and "Status: 0x124" in during.stderr
        assert not sink.gave_up
        assert sorted(results[0].completed) == sorted(i.sop_instance_uid for i in study.instances)
        assert sorted(p.stem for p in _files(tmp_path)) == sorted(results[0].completed)

    handed: list[Instance] = []

    async def keep(instance: Instance) -> int:
        handed.append(instance)
        return 0x0000

    # Given a handler for them, the acceptor hands stray deliveries over.
    async with aiodicom.Client(AE, listen_port=0, unexpected_deliveries=keep) as keeper:
        assert keeper.listen_port is not None
        port = keeper.listen_port
        accepted = await in_thread(send)
    assert accepted.returncode == 0, accepted.stderr
    assert [i.sop_instance_uid for i in handed] == [f.sop_instance_uid for f in files]
    assert [bytes(i.data) for i in handed] == [stored_bytes(f) for f in files]
    assert {i.source_ae_title for i in handed} == {"STORESCU"}


@pytest.mark.interop
async def test_storage_scp_into_a_directory_writes_while_receiving(
    big_series: list[InstanceInfo], tmp_path: Path
) -> None:
    """``Client(..., unexpected_deliveries=DirectorySink(...))``: a plain storage SCP. Each data
    set goes to its file as it arrives (memory stays within the receive buffer's bound), the
    files are the objects sent, and nothing temporary is left."""
    files = big_series[:6]
    sink = DirectorySink(tmp_path, memory_limit=64 * 1024)
    async with aiodicom.Client(AE, listen_port=0, unexpected_deliveries=sink) as client:
        assert client.listen_port is not None
        port = client.listen_port
        tracemalloc.start()
        try:
            sent = await in_thread(lambda: storescu(LOOPBACK, port, AE, files, args=["-v"]))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert sent.returncode == 0, sent.stderr
    assert sorted(sink.paths) == sorted(f.sop_instance_uid for f in files)
    assert peak < 2 * MAX_PREFERRED_SIZE + 256 * 1024
    written = _files(tmp_path)
    assert not [p for p in written if p.name.startswith(".")]
    for info in files:
        back = sink.instance(info.sop_instance_uid)
        assert bytes(back.data) == stored_bytes(info) and back.source_ae_title == "STORESCU"


# ---------------------------------------------------------------------------------------------
# On an association of one's own
# ---------------------------------------------------------------------------------------------


async def test_session_move_and_get(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    series = corpus.series[2]
    query = Query.series(
        StudyInstanceUID=series.study_instance_uid, SeriesInstanceUID=series.series_instance_uid
    )
    move_uid = query.sop_class_uid("move")
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        qr = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, client.listen_port)])
        peer = client.peer(qr.host, qr.port, qr.ae_title)
        proposals = get_proposals(query.sop_class_uid("get"), [series.sop_class_uid])
        proposals.append(aiodicom.ContextProposal(move_uid, ("1.2.840.10008.1.2.1",)))
        async with peer.associate(proposals) as session:
            got = await session.get(query)
            moved = await session.move(query)
            with pytest.raises(MoveDestinationUnknown):
                await session.move(query, "NOWHERE")
    assert_arrived(got, series.instances)
    assert_arrived(moved, series.instances)


# ---------------------------------------------------------------------------------------------
# Iterating without 'async with', as a C-FIND is
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_async_for_runs_the_retrieval(
    kind: str, dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    series = corpus.series[0]
    query = Query.series(
        StudyInstanceUID=series.study_instance_uid, SeriesInstanceUID=series.series_instance_uid
    )
    async with connected("dcmqrscp", dcmqrscp_factory, None) as (client, peer):
        retrieval = retrieve(peer, kind, query)
        events = [event async for event in retrieval]
        assert client._router.active == 0
    assert retrieval.result is not None
    assert_arrived(retrieval.result, series.instances)
    arrived = [e.instance.sop_instance_uid for e in events if isinstance(e, InstanceArrived)]
    assert arrived == list(retrieval.result.completed)
    assert any(isinstance(event, Progress) for event in events)


async def test_plain_async_for_raises_the_failure(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    qr = dcmqrscp_factory()  # an empty HostTable: our AE title is unknown there
    study = corpus.studies[0]
    async with aiodicom.Client(AE, listen_port=0) as client:
        peer = client.peer(qr.host, qr.port, qr.ae_title)
        with pytest.raises(MoveDestinationUnknown):
            async for _ in peer.move(Query.study(StudyInstanceUID=study.study_instance_uid)):
                pass
        assert client._router.active == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_async_for_that_breaks_cancels(
    kind: str, dcmqrscp_factory: Callable[..., DcmQrScp], big_series: list[InstanceInfo],
    tmp_path: Path,
) -> None:
    """Breaking out of a plain ``async for`` drops the iteration; closing it, as the event loop
    does at once, sends C-CANCEL. The next operation on the association waits for that."""
    query = _big_query(big_series)
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        qr = dcmqrscp_factory(
            move_destinations=[(AE, LOOPBACK, client.listen_port)], load_corpus=False
        )
        qr.load(big_series)
        peer = client.peer(qr.host, qr.port, qr.ae_title)
        proposals = get_proposals(query.sop_class_uid("get"), [big_series[0].sop_class_uid])
        proposals.append(aiodicom.ContextProposal(query.sop_class_uid("move"), (EXPLICIT_LE,)))
        async with peer.associate(proposals) as session:
            sink = DirectorySink(tmp_path)
            stopped = session.get(query, sink=sink) if kind == "get" \
                else session.move(query, sink=sink)
            seen = 0
            async for event in stopped:
                if isinstance(event, InstanceArrived):
                    seen += 1
                    if seen == 3:
                        break
            again = await session.get(Query.image(
                StudyInstanceUID=big_series[0].study_instance_uid,
                SeriesInstanceUID=big_series[0].series_instance_uid,
                SOPInstanceUID=big_series[-1].sop_instance_uid,
            ))
        assert client._router.active == 0
    assert again.completed == (big_series[-1].sop_instance_uid,)
    result = stopped.result
    assert result is not None and result.cancelled and not result.ok
    assert 3 <= len(result.completed) < BIG_COUNT
    _assert_directory_matches(tmp_path, result, big_series)


async def test_a_retrieval_runs_once(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    series = corpus.series[0]
    query = Query.series(
        StudyInstanceUID=series.study_instance_uid, SeriesInstanceUID=series.series_instance_uid
    )
    qr = dcmqrscp_factory()
    async with aiodicom.Client(AE) as client:
        retrieval = client.peer(qr.host, qr.port, qr.ae_title).get(query)
        await retrieval
        with pytest.raises(RuntimeError, match="runs once"):
            await retrieval
