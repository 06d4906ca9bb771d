"""C-STORE SCU against real peers: DCMTK storescp and our own acceptor.

The point of every test here is that bytes pass through untouched: what a peer receives is the
data set exactly as the file (or Instance) holds it, unless the peer refused that transfer
syntax and we had to convert.
"""

from __future__ import annotations

import array
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from peers import require_executable
from peers.dcmtk import StoreScp
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

import aiodicom
from aiodicom.acceptor import IncomingStore
from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import C_STORE_RSP, NO_DATASET, DimseMessage
from aiodicom.instance import Instance
from aiodicom.services.store import (
    STATUS_NOT_SENT_LOCAL_ERROR,
    STATUS_NOT_SENT_NO_CONTEXT,
    StoreItem,
    StoreResult,
    proposals_for,
)
from aiodicom.uids import storage_sop_classes

DCMCJPEG = "/usr/bin/dcmcjpeg"
SIZE = 8


# --- the corpus ----------------------------------------------------------------------------------


def make_dataset(sop_class: str = CTImageStorage, *, pixels: bool = True) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT" if sop_class == CTImageStorage else "MR"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "STORE-1"
    # A private element and a sequence: the two things a decode + re-encode most easily alters.
    ds.add_new(0x00090010, "LO", "AIODICOM TEST")
    ds.add_new(0x00091001, "LO", "private value")
    item = Dataset()
    item.CodeValue = "T-D0050"
    item.CodingSchemeDesignator = "SRT"
    ds.AnatomicRegionSequence = Sequence([item])
    if pixels:
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = array.array("H", ((7 * i) % 4096 for i in range(SIZE * SIZE))).tobytes()
    return ds


def with_meta(ds: Dataset, transfer_syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    return ds


def rle_compressed(ds: Dataset) -> Dataset:
    with_meta(ds, ExplicitVRLittleEndian)
    ds.compress(RLELossless, generate_instance_uid=False)
    return ds


def write_file(path: Path, ds: Dataset, transfer_syntax: str) -> Path:
    if transfer_syntax == RLELossless:
        rle_compressed(ds)
    else:
        with_meta(ds, transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def data_set_bytes(path: Path) -> bytes:
    """The data set of a Part 10 file, found from FileMetaInformationGroupLength alone."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    group, element, vr, _, length = struct.unpack_from("<HH2sHI", raw, 132)
    assert (group, element, vr) == (2, 0, b"UL")
    return raw[132 + 12 + length :]


def sop_instance_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    """Part 10 files in several transfer syntaxes, keyed by a short name."""
    directory = tmp_path / "corpus"
    directory.mkdir()
    return {
        "ct_explicit": write_file(directory / "ct1.dcm", make_dataset(), ExplicitVRLittleEndian),
        "mr_implicit": write_file(
            directory / "mr1.dcm", make_dataset(MRImageStorage), ImplicitVRLittleEndian
        ),
        "mr_deflated": write_file(
            directory / "mr2.dcm", make_dataset(MRImageStorage), DeflatedExplicitVRLittleEndian
        ),
        "ct_rle": write_file(directory / "ct2.dcm", make_dataset(), RLELossless),
    }


def jpeg_lossless_file(source: Path, directory: Path) -> Path:
    """A JPEG Lossless copy of ``source`` made by DCMTK (pydicom cannot encode JPEG)."""
    require_executable(DCMCJPEG)
    target = directory / "ct_jpeg.dcm"
    proc = subprocess.run(
        [DCMCJPEG, "+e1", "+ua", str(source), str(target)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert dcmread(target).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    return target


# --- our own acceptor ----------------------------------------------------------------------------


class Recorder:
    """A Storage SCP handler that keeps what arrived and answers the status it is told to."""

    def __init__(self, statuses: dict[str, tuple[int, str | None]] | None = None) -> None:
        self.received: dict[str, tuple[str | None, bytes]] = {}
        self.requests: list[IncomingStore] = []
        self.statuses = statuses or {}

    async def __call__(self, incoming: IncomingStore) -> DimseMessage:
        command = incoming.message.command
        uid = str(command["AffectedSOPInstanceUID"])
        assert incoming.message.data is not None
        self.received[uid] = (incoming.context.transfer_syntax, incoming.message.data)
        self.requests.append(incoming)
        status, comment = self.statuses.get(uid, (0x0000, None))
        return DimseMessage(
            incoming.message.context_id,
            {
                "CommandField": C_STORE_RSP,
                "MessageIDBeingRespondedTo": incoming.message.message_id,
                "AffectedSOPClassUID": command["AffectedSOPClassUID"],
                "AffectedSOPInstanceUID": uid,
                "CommandDataSetType": NO_DATASET,
                "Status": status,
                "ErrorComment": comment,
            },
            None,
        )


async def with_acceptor(
    recorder: Recorder, action: Callable[[aiodicom.Peer], Awaitable[StoreResult]]
) -> StoreResult:
    async with aiodicom.Client("AIOSCP", listen_port=0) as scp, aiodicom.Client("AIOSCU") as scu:
        # The raw C-STORE-RQ is what these tests look at (Priority, Move Originator): hook
        # the acceptor below the Instance-level unexpected_deliveries handler.
        scp._acceptor_policy.store_handler = recorder
        scp._acceptor_policy.data_opener = None
        assert scp.listen_port is not None
        return await action(scu.peer("127.0.0.1", scp.listen_port, "AIOSCP"))


# --- tests: DCMTK storescp -----------------------------------------------------------------------


async def test_storescp_receives_the_data_sets_bytes_as_stored(
    storescp_factory: Callable[..., StoreScp], corpus: dict[str, Path]
) -> None:
    # +B: storescp writes the data set exactly as it came off the wire.
    scp = storescp_factory(extra_args=["+B"])
    dataset = make_dataset()
    instance_ds = make_dataset(MRImageStorage)
    instance = Instance(
        str(instance_ds.SOPClassUID), str(instance_ds.SOPInstanceUID), ImplicitVRLittleEndian,
        encode_dataset(instance_ds, ImplicitVRLittleEndian),
    )
    items: list[StoreItem] = [*corpus.values(), dataset, instance]
    async with aiodicom.Client("AIOSCU") as client:
        result = await client.peer(scp.host, scp.port, scp.ae_title).store(items)

    assert result.ok, result.failed
    assert [o.source for o in result.outcomes] == [
        *(str(p) for p in corpus.values()), "<dataset>", "<instance>"
    ]
    expected = {sop_instance_of(p): data_set_bytes(p) for p in corpus.values()}
    expected[str(dataset.SOPInstanceUID)] = encode_dataset(dataset, ExplicitVRLittleEndian)
    expected[instance.sop_instance_uid] = bytes(instance.data)
    received = {sop_instance_of(p): data_set_bytes(p) for p in scp.received_files()}
    assert received.keys() == expected.keys()
    for uid, data in expected.items():
        assert received[uid] == data, uid
    sent_in = {o.sop_instance_uid: o.transfer_syntax_uid for o in result.outcomes}
    assert sent_in[sop_instance_of(corpus["ct_rle"])] == RLELossless
    assert sent_in[sop_instance_of(corpus["mr_deflated"])] == DeflatedExplicitVRLittleEndian
    assert sent_in[sop_instance_of(corpus["mr_implicit"])] == ImplicitVRLittleEndian
    assert result.bytes_sent == sum(len(data) for data in expected.values())


async def test_implicit_only_peer_gets_conversions_and_clear_failures(
    storescp_factory: Callable[..., StoreScp], corpus: dict[str, Path], tmp_path: Path
) -> None:
    scp = storescp_factory(accept_all=False, extra_args=["+xi", "+B"])
    jpeg = jpeg_lossless_file(corpus["ct_explicit"], tmp_path)
    rle_dataset = rle_compressed(make_dataset())
    rle_pixels = rle_dataset.PixelData
    items: list[StoreItem] = [
        corpus["ct_explicit"], corpus["ct_rle"], jpeg, rle_dataset, corpus["mr_implicit"]
    ]
    async with aiodicom.Client("AIOSCU") as client:
        result = await client.peer(scp.host, scp.port, scp.ae_title).store(items)

    explicit, rle, jpeg_outcome, rle_ds_outcome, implicit = result.outcomes
    received = {sop_instance_of(p): p for p in scp.received_files()}
    for outcome in (explicit, implicit):
        assert outcome.ok and outcome.transfer_syntax_uid == ImplicitVRLittleEndian
    # Converted: same content, re-encoded in Implicit VR.
    original = dcmread(corpus["ct_explicit"])
    stored = received[explicit.sop_instance_uid]
    assert dcmread(stored).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    copy = decode_dataset(data_set_bytes(stored), ImplicitVRLittleEndian)
    assert copy.PixelData == original.PixelData
    assert copy.PatientName == original.PatientName
    assert copy[0x00091001].value.rstrip(b" ") == b"private value"
    assert copy.AnatomicRegionSequence[0].CodeValue == "T-D0050"
    # Not converted: sent as it was.
    assert data_set_bytes(received[implicit.sop_instance_uid]) == data_set_bytes(
        corpus["mr_implicit"]
    )

    # Compressed objects: decompressed when pydicom can, else reported, never raised.
    for outcome, transfer_syntax in ((rle, RLELossless), (rle_ds_outcome, RLELossless),
                                     (jpeg_outcome, JPEGLosslessSV1)):
        if get_decoder(transfer_syntax).is_available:
            assert outcome.ok and outcome.transfer_syntax_uid == ImplicitVRLittleEndian
            pixels = decode_dataset(
                data_set_bytes(received[outcome.sop_instance_uid]), ImplicitVRLittleEndian
            ).PixelData
            assert pixels == original.PixelData
        else:
            assert not outcome.ok and not outcome.sent
            assert outcome.status == STATUS_NOT_SENT_NO_CONTEXT
            assert outcome.error_comment is not None
            assert "cannot decompress" in outcome.error_comment
            assert outcome.sop_instance_uid not in received
    assert not jpeg_outcome.ok or get_decoder(JPEGLosslessSV1).is_available
    # The caller's Dataset was decompressed on a copy, if at all.
    assert rle_dataset.file_meta.TransferSyntaxUID == RLELossless
    assert rle_dataset.PixelData == rle_pixels
    assert len(result.failed) == sum(not o.ok for o in result.outcomes)


# --- tests: our acceptor -------------------------------------------------------------------------


async def test_aiodicom_acceptor_receives_identical_bytes(corpus: dict[str, Path]) -> None:
    recorder = Recorder()
    dataset = rle_compressed(make_dataset())
    implicit_dataset = with_meta(make_dataset(MRImageStorage), ImplicitVRLittleEndian)
    items: list[StoreItem] = [*corpus.values(), dataset, implicit_dataset]
    result = await with_acceptor(recorder, lambda peer: peer.store(items))

    assert result.ok and len(result.succeeded) == len(items)
    for path in corpus.values():
        transfer_syntax, data = recorder.received[sop_instance_of(path)]
        assert transfer_syntax == dcmread(path).file_meta.TransferSyntaxUID
        assert data == data_set_bytes(path)
    assert recorder.received[str(dataset.SOPInstanceUID)] == (
        RLELossless, encode_dataset(dataset, RLELossless)
    )
    assert recorder.received[str(implicit_dataset.SOPInstanceUID)] == (
        ImplicitVRLittleEndian, encode_dataset(implicit_dataset, ImplicitVRLittleEndian)
    )


async def test_per_object_status_is_recorded_not_raised(corpus: dict[str, Path]) -> None:
    refused = sop_instance_of(corpus["mr_implicit"])
    coerced = sop_instance_of(corpus["ct_rle"])
    recorder = Recorder({refused: (0xA700, "disk full"), coerced: (0xB000, None)})
    result = await with_acceptor(recorder, lambda peer: peer.store(corpus.values()))

    assert not result.ok
    [failed] = result.failed
    assert failed.sop_instance_uid == refused and failed.sent
    assert failed.status == 0xA700
    assert failed.status_text == "Refused: out of resources"
    assert failed.error_comment == "disk full"
    assert failed.source == str(corpus["mr_implicit"])
    [warning] = result.warnings
    assert warning.sop_instance_uid == coerced and warning.ok
    assert warning.status_text == "Warning: coercion of data elements"
    assert len(result.succeeded) == 2
    assert len(recorder.received) == 4


async def test_unusable_items_fail_alone(corpus: dict[str, Path], tmp_path: Path) -> None:
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not a DICOM file" * 20)
    private_class = make_dataset("1.2.826.0.1.3680043.10.1234.1", pixels=False)
    no_uid = make_dataset()
    del no_uid.SOPInstanceUID
    items: list[StoreItem] = [
        not_dicom, tmp_path / "missing.dcm", corpus["ct_explicit"], private_class, no_uid,
    ]
    recorder = Recorder()
    result = await with_acceptor(recorder, lambda peer: peer.store(items))

    bad_file, missing, good, unsupported, no_uid_outcome = result.outcomes
    assert good.ok and list(recorder.received) == [good.sop_instance_uid]
    for outcome in (bad_file, missing, no_uid_outcome):
        assert outcome.status == STATUS_NOT_SENT_LOCAL_ERROR and not outcome.sent
        assert outcome.error_comment and outcome.error_comment.startswith("not sent: ")
    assert missing.source == str(tmp_path / "missing.dcm")
    assert unsupported.status == STATUS_NOT_SENT_NO_CONTEXT and not unsupported.sent
    assert unsupported.status_text == "Refused: SOP class not supported"
    assert "accepted no presentation context" in (unsupported.error_comment or "")
    assert unsupported.sop_instance_uid == private_class.SOPInstanceUID
    with pytest.raises(TypeError):
        proposals_for([42])  # type: ignore[list-item]


async def test_session_store_carries_move_originator_and_priority(
    corpus: dict[str, Path],
) -> None:
    recorder = Recorder()
    items = [corpus["ct_explicit"], corpus["mr_implicit"]]

    async def store(peer: aiodicom.Peer) -> StoreResult:
        async with peer.associate(proposals_for(items)) as session:
            return await session.store(items, priority=2, move_originator=("MOVESCU", 77))

    result = await with_acceptor(recorder, store)
    assert result.ok
    for incoming in recorder.requests:
        command = incoming.message.command
        assert command["MoveOriginatorApplicationEntityTitle"] == "MOVESCU"
        assert command["MoveOriginatorMessageID"] == 77
        assert command["Priority"] == 2
        assert incoming.calling_ae_title == "AIOSCU"


def test_proposals_one_context_per_carried_syntax_plus_fallback(
    corpus: dict[str, Path],
) -> None:
    proposals = proposals_for([*corpus.values(), make_dataset()])
    assert [(p.abstract_syntax, p.transfer_syntaxes) for p in proposals] == [
        (CTImageStorage, (ExplicitVRLittleEndian,)),
        (CTImageStorage, (RLELossless,)),
        (CTImageStorage, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
        (MRImageStorage, (ImplicitVRLittleEndian,)),
        (MRImageStorage, (DeflatedExplicitVRLittleEndian,)),
        (MRImageStorage, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ]


async def test_more_than_128_contexts_use_several_associations() -> None:
    classes = storage_sop_classes()[:70]
    items = [make_dataset(sop_class, pixels=False) for sop_class in classes]
    with pytest.raises(ValueError, match="128"):
        proposals_for(items)
    recorder = Recorder()
    result = await with_acceptor(recorder, lambda peer: peer.store(items))

    assert result.ok and len(result.outcomes) == 70
    assert [o.sop_class_uid for o in result.outcomes] == list(classes)
    # Context IDs start again at 1 on each association: the same ID for two SOP classes means
    # a second association.
    by_context: dict[int, set[str]] = {}
    for incoming in recorder.requests:
        by_context.setdefault(incoming.context.context_id, set()).add(
            incoming.context.abstract_syntax
        )
    assert any(len(abstract) > 1 for abstract in by_context.values())


@pytest.mark.interop
async def test_file_meta_disagreeing_with_its_data_set_is_sent_with_the_data_sets_uids(
    storescp_factory: Callable[..., StoreScp], caplog: pytest.LogCaptureFixture
) -> None:
    # pydicom's rtplan.dcm: File Meta SOP Instance UID 1.2.999..., data set 1.2.777... .
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("rtplan.dcm"))  # type: ignore[arg-type]
    on_disk = dcmread(path)
    assert on_disk.file_meta.MediaStorageSOPInstanceUID != on_disk.SOPInstanceUID
    scp = storescp_factory()
    async with aiodicom.Client("AIOSCU") as client:
        result = await client.peer(scp.host, scp.port, scp.ae_title).store([path])

    assert result.ok, result.failed  # storescp answered 0xA900 before the fix
    (outcome,) = result.outcomes
    assert outcome.status == 0x0000
    assert outcome.sop_instance_uid == on_disk.SOPInstanceUID
    (stored,) = scp.received_files()
    received = dcmread(stored)
    assert received.SOPInstanceUID == on_disk.SOPInstanceUID
    assert received.file_meta.MediaStorageSOPInstanceUID == on_disk.SOPInstanceUID
    assert "differs from the data set's" in caplog.text
