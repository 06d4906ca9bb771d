"""Instance, Part 10 writing (aiodicom.fileio) and the sinks retrieved instances go to."""

from __future__ import annotations

import errno
import functools
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import anyio.lowlevel
import pydicom.filereader
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

import aiodicom.instance
import aiodicom.unnamed
from aiodicom.errors import DicomError
from aiodicom.fileio import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    FileMetaError,
    MalformedDataSetError,
    encoding_of,
    peek_elements,
    write_part10_atomic,
)
from aiodicom.instance import Instance
from aiodicom.sinks import (
    DirectorySink,
    InvalidUIDError,
    MemorySink,
    UnsafePathError,
    as_sink,
    default_layout,
)
from aiodicom.unnamed import open_unnamed

STUDY = 0x0020000D
SERIES = 0x0020000E
SOP_INSTANCE = 0x00080018
PATIENT_ID = 0x00100020

STUDY_UID = "1.2.826.0.1.3680043.2.1125.1"
# None a prefix of another, so a test can find each one's bytes.
SERIES_UID = "1.2.826.0.1.3680043.2.1125.2"
SOP_UID = "1.2.826.0.1.3680043.2.1125.3"

# (transfer syntax, implicit VR, little endian, deflated) covering every data set encoding.
SYNTAXES = [
    (ImplicitVRLittleEndian, True, True, False),
    (ExplicitVRLittleEndian, False, True, False),
    (ExplicitVRBigEndian, False, False, False),
    (DeflatedExplicitVRLittleEndian, False, True, True),
]


def make_dataset(
    study: str | None = STUDY_UID, series: str | None = SERIES_UID, sop: str = SOP_UID
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.Modality = "CT"
    # Sequences ahead of group 0020, one of undefined length with a nested one, so a scanner
    # has to step over items to reach the UIDs.
    inner = Dataset()
    inner.CodeValue = "12345"
    outer = Dataset()
    outer.ReferencedSOPClassUID = CTImageStorage
    outer.ReferencedSOPInstanceUID = "1.2.3.4"
    outer.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([outer, outer])
    ds.ProcedureCodeSequence = Sequence([inner])  # defined lengths, pydicom's default
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    outer["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-7"
    if study is not None:
        ds.StudyInstanceUID = study
    if series is not None:
        ds.SeriesInstanceUID = series
    ds.InstanceNumber = 3
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8
    ds.add_new(0x7FE00010, "OB", bytes(range(8)))
    return ds


def encode(ds: Dataset, implicit: bool, little: bool, deflated: bool = False) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if deflated:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        raw = compressor.compress(raw) + compressor.flush()
    return raw


def make_instance(
    ds: Dataset | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    source_ae_title: str | None = "PACS",
    sop: str | None = None,
) -> Instance:
    ds = ds if ds is not None else make_dataset()
    encoding = encoding_of(transfer_syntax)
    data = encode(ds, encoding.implicit_vr, encoding.little_endian, encoding.deflated)
    return Instance(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=sop if sop is not None else ds.SOPInstanceUID,
        transfer_syntax_uid=transfer_syntax,
        data=data,
        source_ae_title=source_ae_title,
    )


def data_set_bytes_of_file(raw: bytes) -> bytes:
    """What follows the File Meta Information in a Part 10 file."""
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    assert raw[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    (group_length,) = struct.unpack("<I", raw[140:144])
    return raw[144 + group_length :]


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------------
# encoding_of and peek_elements


@pytest.mark.parametrize(("syntax", "implicit", "little", "deflated"), SYNTAXES)
def test_encoding_of_known_syntaxes(
    syntax: str, implicit: bool, little: bool, deflated: bool
) -> None:
    encoding = encoding_of(syntax)
    assert (encoding.implicit_vr, encoding.little_endian, encoding.deflated) == (
        implicit,
        little,
        deflated,
    )


def test_encoding_of_encapsulated_and_private_is_explicit_little() -> None:
    for syntax in (JPEGBaseline8Bit, "1.2.3.4.5.6.7"):
        assert encoding_of(syntax) == (False, True, False)


@pytest.mark.parametrize(("syntax", "implicit", "little", "deflated"), SYNTAXES)
def test_peek_elements_every_encoding(
    syntax: str, implicit: bool, little: bool, deflated: bool
) -> None:
    data = encode(make_dataset(), implicit, little, deflated)
    found = peek_elements(data, syntax, [STUDY, SERIES, PATIENT_ID, SOP_INSTANCE])
    assert found == {
        STUDY: STUDY_UID,
        SERIES: SERIES_UID,
        PATIENT_ID: "PID-7",
        SOP_INSTANCE: SOP_UID,
    }


@pytest.mark.parametrize(("syntax", "implicit", "little", "deflated"), SYNTAXES)
def test_peek_elements_absent_tags_are_left_out(
    syntax: str, implicit: bool, little: bool, deflated: bool
) -> None:
    data = encode(make_dataset(study=None), implicit, little, deflated)
    assert peek_elements(data, syntax, [STUDY, SERIES]) == {SERIES: SERIES_UID}
    assert peek_elements(data, syntax, []) == {}
    # Sequences, of undefined and of defined length, have no text value to give.
    assert peek_elements(data, syntax, [0x00081140, 0x00081032]) == {}


def test_test_data_has_undefined_length_sequences() -> None:
    data = encode(make_dataset(), implicit=False, little=True)
    undefined = data.count(b"SQ\x00\x00\xff\xff\xff\xff")
    assert undefined == 3
    assert data.count(b"SQ\x00\x00") > undefined  # defined-length ones too


def _implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, size) + value


def test_peek_elements_undefined_length_un_holds_implicit_items() -> None:
    # CP-246: an undefined-length UN in explicit VR carries implicit VR LE content, here an
    # item holding an undefined-length sequence whose item has a defined length.
    undefined = 0xFFFFFFFF
    nested = (
        _implicit(0x00091020, b"", undefined)
        + _implicit(0xFFFEE000, _implicit(0x00100010, b"AB"))
        + _implicit(0xFFFEE0DD, b"")
    )
    item = _implicit(0xFFFEE000, b"", undefined) + nested + _implicit(0xFFFEE00D, b"")
    data = (
        struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2)
        + b"CT"
        + struct.pack("<HH2sHI", 0x0009, 0x1010, b"UN", 0, undefined)
        + item
        + _implicit(0xFFFEE0DD, b"")
        + struct.pack("<HH2sH", 0x0020, 0x000D, b"UI", 6)
        + b"1.2.3\0"
    )
    assert peek_elements(data, ExplicitVRLittleEndian, [0x00080060, STUDY]) == {
        0x00080060: "CT",
        STUDY: "1.2.3",
    }


def test_peek_elements_stops_before_what_it_does_not_need() -> None:
    data = encode(make_dataset(), implicit=True, little=True)
    cut = data.index(SERIES_UID.encode()) + len(SERIES_UID) + 1
    # Everything past the series UID is gone: still fine, the scan never goes there.
    assert peek_elements(data[:cut], ImplicitVRLittleEndian, [STUDY, SERIES])[SERIES] == SERIES_UID
    assert peek_elements(memoryview(data)[:cut], ImplicitVRLittleEndian, [STUDY]) == {
        STUDY: STUDY_UID
    }


def test_peek_elements_inflates_only_what_it_scans() -> None:
    ds = make_dataset()
    ds.PixelData = bytes(20_000_000)  # compresses to about 20 kB, would inflate to 20 MB
    data = encode(ds, implicit=False, little=True, deflated=True)
    found = peek_elements(data, DeflatedExplicitVRLittleEndian, [SERIES])
    assert found == {SERIES: SERIES_UID}


def test_peek_elements_truncated_wanted_value() -> None:
    data = encode(make_dataset(), implicit=False, little=True)
    cut = data.index(STUDY_UID.encode()) + 3
    with pytest.raises(MalformedDataSetError):
        peek_elements(data[:cut], ExplicitVRLittleEndian, [STUDY])


def test_peek_elements_corrupt_deflate() -> None:
    with pytest.raises(MalformedDataSetError) as caught:
        peek_elements(b"\xff" * 64, DeflatedExplicitVRLittleEndian, [STUDY])
    assert isinstance(caught.value, DicomError)


def test_peek_elements_refuses_absurd_nesting() -> None:
    # Undefined-length SQ > undefined-length item > SQ > ... a hundred levels down, unclosed.
    level = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    level += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    with pytest.raises(MalformedDataSetError):
        peek_elements(level * 100, ExplicitVRLittleEndian, [STUDY])


uids = st.lists(st.integers(0, 10**12), min_size=2, max_size=4).map(
    lambda parts: ".".join(str(part) for part in parts)
)


@given(study=uids, series=uids, syntax=st.sampled_from(SYNTAXES))
def test_peek_elements_agrees_with_pydicom(
    study: str, series: str, syntax: tuple[str, bool, bool, bool]
) -> None:
    uid, implicit, little, deflated = syntax
    data = encode(make_dataset(study, series), implicit, little, deflated)
    assert peek_elements(data, uid, [STUDY, SERIES]) == {STUDY: study, SERIES: series}


# ---------------------------------------------------------------------------------------------
# Instance


def test_instance_dataset_is_lazy_and_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = pydicom.filereader.read_dataset

    def spy(*args: Any, **kwargs: Any) -> Dataset:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(aiodicom.instance, "read_dataset", spy)
    instance = make_instance()
    original = bytes(instance.data)
    assert calls == []
    first = instance.dataset
    decoded = len(calls)
    assert decoded >= 1
    assert instance.dataset is first
    assert len(calls) == decoded
    assert first.PatientID == "PID-7"
    assert instance.data == original


@pytest.mark.parametrize(("syntax", "implicit", "little", "deflated"), SYNTAXES)
def test_instance_dataset_every_encoding(
    syntax: str, implicit: bool, little: bool, deflated: bool
) -> None:
    instance = make_instance(transfer_syntax=syntax)
    ds = instance.dataset
    assert ds.StudyInstanceUID == STUDY_UID
    assert ds.ReferencedImageSequence[1].PurposeOfReferenceCodeSequence[0].CodeValue == "12345"
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert instance.peek_uids() == (STUDY_UID, SERIES_UID)


def test_instance_is_frozen_and_compares_by_value() -> None:
    instance = make_instance()
    with pytest.raises(AttributeError):
        instance.sop_instance_uid = "1.2"  # type: ignore[misc]
    _ = instance.dataset
    assert instance == make_instance()
    assert "bytes>" in repr(instance)


def test_instance_peek_uids_missing() -> None:
    instance = make_instance(make_dataset(study=None, series=None))
    assert instance.peek_uids() == (None, None)


def test_file_meta() -> None:
    instance = make_instance(source_ae_title="  STORESCU  ")
    meta = instance.file_meta()
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == SOP_UID
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME == "AIODICOM_010"
    assert meta.SourceApplicationEntityTitle == "STORESCU"
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.") and len(IMPLEMENTATION_CLASS_UID) <= 64

    custom = instance.file_meta(implementation_class_uid="1.2.3", implementation_version_name="X")
    assert custom.ImplementationClassUID == "1.2.3"
    assert custom.ImplementationVersionName == "X"
    assert "SourceApplicationEntityTitle" not in make_instance(source_ae_title=None).file_meta()


def test_file_meta_refuses_unencodable_values() -> None:
    with pytest.raises(FileMetaError):
        make_instance(sop="1." + "2" * 70).file_meta()
    with pytest.raises(FileMetaError):
        make_instance(source_ae_title="ÄÖÜ").to_part10_bytes()
    with pytest.raises(FileMetaError):
        make_instance(source_ae_title="A" * 17).to_part10_bytes()


@pytest.mark.parametrize(("syntax", "implicit", "little", "deflated"), SYNTAXES)
def test_to_part10_bytes_is_readable_and_keeps_the_data(
    syntax: str, implicit: bool, little: bool, deflated: bool
) -> None:
    instance = make_instance(transfer_syntax=syntax)
    raw = instance.to_part10_bytes()
    assert data_set_bytes_of_file(raw) == instance.data
    ds = dcmread(DicomBytesIO(raw))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SeriesInstanceUID == SERIES_UID


# ---------------------------------------------------------------------------------------------
# write_part10_atomic


@pytest.mark.parametrize(("syntax", "implicit", "little", "deflated"), SYNTAXES)
def test_write_part10_atomic_roundtrip(
    tmp_path: Path, syntax: str, implicit: bool, little: bool, deflated: bool
) -> None:
    # A memoryview with padding quirks pydicom would not write itself: passed through as is.
    data = bytearray(encode(make_dataset(), implicit, little, deflated))
    instance = Instance(CTImageStorage, SOP_UID, syntax, memoryview(data), "PACS")
    target = tmp_path / "x.dcm"
    write_part10_atomic(target, instance, fsync=True)
    raw = target.read_bytes()
    assert data_set_bytes_of_file(raw) == bytes(data)
    ds = dcmread(target)
    assert ds.file_meta.MediaStorageSOPInstanceUID == SOP_UID
    assert ds.file_meta.SourceApplicationEntityTitle == "PACS"
    assert ds.PatientName == "Doe^Jane"
    assert files_under(tmp_path) == [target]


def test_write_part10_atomic_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev

    def trickle(fd: int, buffers: list[memoryview]) -> int:
        # Never more than 7 bytes, and never across a buffer boundary.
        return real(fd, [memoryview(buffers[0])[:7]])

    monkeypatch.setattr(os, "writev", trickle)
    instance = make_instance()
    target = tmp_path / "x.dcm"
    write_part10_atomic(target, instance)
    assert target.read_bytes() == instance.to_part10_bytes()


def test_write_part10_atomic_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.dcm"
    target.write_bytes(b"previous")
    real = os.writev

    def disk_full(fd: int, buffers: list[memoryview]) -> int:
        real(fd, [memoryview(buffers[0])[:100]])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_part10_atomic(target, make_instance())
    assert files_under(tmp_path) == [target]
    assert target.read_bytes() == b"previous"


def unnamed_files_here(directory: Path) -> bool:
    fd = open_unnamed(str(directory))
    if fd is None:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "named-temporary"])
def test_write_part10_atomic_failed_last_step_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    # The last step is linking the unnamed file (O_TMPFILE) into place, or renaming the named
    # temporary file where there is no O_TMPFILE: either failing leaves no file at all.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("denied")

    if not unnamed:
        monkeypatch.setattr(aiodicom.unnamed, "_usable", False)
    elif not unnamed_files_here(tmp_path):
        pytest.skip("no O_TMPFILE on this system or file system")
    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_part10_atomic(tmp_path / "x.dcm", make_instance())
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "named-temporary"])
def test_write_part10_atomic_replaces_an_existing_file_and_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    if not unnamed:
        monkeypatch.setattr(aiodicom.unnamed, "_usable", False)
    instance = make_instance()
    (tmp_path / "elsewhere.dcm").write_bytes(b"not to be written through")
    (tmp_path / "link.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    (tmp_path / "x.dcm").write_bytes(b"previous")
    write_part10_atomic(tmp_path / "x.dcm", instance)
    write_part10_atomic(tmp_path / "link.dcm", instance)
    assert (tmp_path / "x.dcm").read_bytes() == instance.to_part10_bytes()
    # The link is replaced by the file, not written through.
    assert not (tmp_path / "link.dcm").is_symlink()
    assert (tmp_path / "link.dcm").read_bytes() == instance.to_part10_bytes()
    assert (tmp_path / "elsewhere.dcm").read_bytes() == b"not to be written through"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.dcm", "link.dcm", "x.dcm"]


def test_write_part10_atomic_without_proc_writes_a_named_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc names the unnamed file for linking; without it, the file is written again the
    # named way, and unnamed files are not tried again.
    if not unnamed_files_here(tmp_path):
        pytest.skip("no O_TMPFILE on this system or file system")
    real_exists = os.path.exists

    def no_proc(path: Any) -> bool:
        return False if str(path).startswith("/proc/") else real_exists(path)

    def proc_missing(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(aiodicom.unnamed, "_usable", True)
    monkeypatch.setattr(os.path, "exists", no_proc)
    monkeypatch.setattr(os, "link", proc_missing)
    instance = make_instance()
    write_part10_atomic(tmp_path / "x.dcm", instance)
    assert (tmp_path / "x.dcm").read_bytes() == instance.to_part10_bytes()
    assert files_under(tmp_path) == [tmp_path / "x.dcm"]
    assert not unnamed_files_here(tmp_path)


def test_write_part10_atomic_bad_data_leaves_nothing(tmp_path: Path) -> None:
    instance = Instance(CTImageStorage, SOP_UID, ExplicitVRLittleEndian, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        write_part10_atomic(tmp_path / "x.dcm", instance)
    assert files_under(tmp_path) == []


def test_write_part10_atomic_interrupt_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_part10_atomic(tmp_path / "x.dcm", make_instance(), fsync=True)
    assert files_under(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Sinks


async def test_memory_sink() -> None:
    sink = MemorySink()
    first = make_instance()
    other = make_instance(make_dataset(sop="1.2.3.9"))
    await sink(first)
    await sink(other)
    await sink(first)  # sent twice: stored once, counted twice
    assert len(sink) == 2
    assert sink.instances == {SOP_UID: first, "1.2.3.9": other}
    assert list(sink) == [first, other]
    assert sink.bytes_received == 2 * len(first.data) + len(other.data)


async def test_memory_sink_counts_memoryview_bytes() -> None:
    sink = MemorySink()
    data = memoryview(encode(make_dataset(), True, True)).cast("H")
    await sink(Instance(CTImageStorage, SOP_UID, ImplicitVRLittleEndian, data))
    assert sink.bytes_received == data.nbytes


async def test_directory_sink_default_layout(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path / "out")
    instances = [make_instance(make_dataset(sop=f"1.2.3.{n}")) for n in range(3)]
    for instance in instances:
        await sink(instance)
    series_dir = (tmp_path / "out" / STUDY_UID / SERIES_UID).resolve()
    assert sink.paths == {f"1.2.3.{n}": series_dir / f"1.2.3.{n}.dcm" for n in range(3)}
    assert files_under(tmp_path) == sorted(sink.paths.values())
    for instance in instances:
        raw = sink.paths[instance.sop_instance_uid].read_bytes()
        assert data_set_bytes_of_file(raw) == instance.data
        assert dcmread(sink.paths[instance.sop_instance_uid]).SOPInstanceUID == (
            instance.sop_instance_uid
        )
    # Received again: the file is replaced, still one per instance.
    await sink(instances[0])
    assert len(files_under(tmp_path)) == 3


async def test_directory_sink_paths_are_made_when_read_and_stay_bounded(tmp_path: Path) -> None:
    """A file's Path is made when paths is read (or for many files at once), not on the way to
    each response: whatever is read is a Path, and however many instances arrive unread,
    few strings wait (a long-running SCP keeps no growing table); max_remembered still drops
    the oldest."""
    sink = DirectorySink(tmp_path / "out", max_remembered=50)
    for n in range(200):
        await sink(make_instance(make_dataset(sop=f"1.2.3.{n}")))
        # The batch is converted once the task yields (after the response, in an SCP).
        assert len(sink._unconverted) <= 64
        await anyio.lowlevel.checkpoint()
        assert len(sink._unconverted) < 64
    # A caller that never yields still leaves at most two batches waiting.
    for n in range(200, 400):
        await sink(make_instance(make_dataset(sop=f"1.2.3.{n}")))
        assert len(sink._unconverted) < 128
    series_dir = (tmp_path / "out" / STUDY_UID / SERIES_UID).resolve()
    assert sink.paths == {f"1.2.3.{n}": series_dir / f"1.2.3.{n}.dcm" for n in range(350, 400)}
    assert all(isinstance(path, Path) for path in sink.paths.values())
    assert sink.written == 400
    # Read after each instance, as a consumer of InstanceArrived events might.
    await sink(make_instance(make_dataset(sop="1.2.3.999")))
    assert sink.paths.pop("1.2.3.999") == series_dir / "1.2.3.999.dcm"
    assert "1.2.3.999" not in sink.paths


def test_default_layout() -> None:
    assert default_layout(make_instance()) == Path(STUDY_UID, SERIES_UID, SOP_UID + ".dcm")


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [
        ("../../etc", SERIES_UID, SOP_UID),
        (STUDY_UID, "..", SOP_UID),
        (STUDY_UID, SERIES_UID, "../../../tmp/evil"),
        (STUDY_UID, SERIES_UID, "/etc/passwd"),
        ("1." + "2" * 63, SERIES_UID, SOP_UID),
        (STUDY_UID, "1.2.abc", SOP_UID),
        (STUDY_UID, "1..2", SOP_UID),
        (STUDY_UID, ".1.2", SOP_UID),
        (STUDY_UID, "1.2\\3", SOP_UID),
        (STUDY_UID, SERIES_UID, "1.2.\u0663"),  # a digit, but not an ASCII one
        ("", SERIES_UID, SOP_UID),
        (None, SERIES_UID, SOP_UID),
        (STUDY_UID, None, SOP_UID),
    ],
)
@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")  # pydicom on the bad UIDs we set
async def test_directory_sink_refuses_bad_uids(
    tmp_path: Path, study: str | None, series: str | None, sop: str
) -> None:
    sink = DirectorySink(tmp_path / "out")
    ds = make_dataset(study, series)
    with pytest.raises(InvalidUIDError) as caught:
        await sink(make_instance(ds, sop=sop))
    assert isinstance(caught.value, DicomError)
    assert list(tmp_path.rglob("*")) == []
    assert sink.paths == {}


@pytest.mark.parametrize(
    "relative", ["../evil.dcm", "a/../../evil.dcm", "/tmp/evil.dcm", "", ".", "link/evil.dcm"]
)
async def test_directory_sink_refuses_layout_escapes(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "out"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    sink = DirectorySink(root, layout=lambda instance: relative)
    with pytest.raises(UnsafePathError):
        await sink(make_instance())
    assert files_under(tmp_path) == []


async def test_directory_sink_custom_layout(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path, layout=lambda i: Path("flat", i.sop_instance_uid + ".dcm"))
    await sink(make_instance(make_dataset(study=None, series=None)))
    assert sink.paths == {SOP_UID: (tmp_path / "flat" / (SOP_UID + ".dcm")).resolve()}
    assert dcmread(sink.paths[SOP_UID]).PatientID == "PID-7"


async def test_as_sink() -> None:
    received: list[Instance] = []

    async def function(instance: Instance) -> None:
        received.append(instance)

    async def with_tag(tag: str, instance: Instance) -> None:
        received.append(instance)

    class Callable:
        async def __call__(self, instance: Instance) -> None:
            received.append(instance)

    memory = MemorySink()
    assert as_sink(memory) is memory
    directory = DirectorySink(".")
    assert as_sink(directory) is directory
    for candidate in (function, functools.partial(with_tag, "x"), Callable()):
        await as_sink(candidate)(make_instance())
    assert len(received) == 3


def test_as_sink_refuses_non_sinks() -> None:
    def plain(instance: Instance) -> None:
        pass

    for candidate in (plain, None, 42, lambda instance: None, MemorySink):
        with pytest.raises(TypeError):
            as_sink(candidate)
    with pytest.raises(TypeError, match="DirectorySink"):
        as_sink("/tmp/out")
