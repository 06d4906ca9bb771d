"""peek_elements against pydicom, its failures on bad bytes, and the File Meta encoding.

The File Meta Information is compared byte for byte with a frozen copy of the encoder as it
was before it cached the parts shared by the instances of a retrieval.
"""

from __future__ import annotations

import string
import struct
import zlib
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)

from aiodicom.fileio import (
    IDENTIFYING_TAGS,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    PREAMBLE,
    FileMetaError,
    MalformedDataSetError,
    encode_file_meta,
    part10_header,
    peek_elements,
    peek_prefix,
)
from aiodicom.instance import Instance

STUDY = 0x0020000D
SERIES = 0x0020000E
UNDEFINED = 0xFFFFFFFF

# (transfer syntax, implicit VR, little endian) of the encodings scanned without inflating.
PLAIN = [
    (ImplicitVRLittleEndian, True, True),
    (ExplicitVRLittleEndian, False, True),
    (ExplicitVRBigEndian, False, False),
]

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(ds: Dataset, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate(raw: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(raw) + compressor.flush()


def pydicom_top_level_values(
    raw: bytes, implicit: bool, little: bool, tags: set[int]
) -> dict[int, str]:
    """What peek_elements promises, as pydicom reads it: the raw value of each top-level
    element among ``tags``, sequences (as far as the VR, or for implicit VR the dictionary,
    tells) and undefined-length values left out."""
    ds = read_dataset(BytesIO(raw), is_implicit_VR=implicit, is_little_endian=little)
    expected = {}
    for tag in tags:
        if tag not in ds:
            continue
        element = ds.get_item(tag)
        if isinstance(element, RawDataElement):
            undefined = element.length == UNDEFINED
            value = element.value or b""  # None for an empty Pixel Data
        else:
            # pydicom converts at once what it read whole (undefined-length sequences) and
            # some empty values.
            undefined = element.is_undefined_length
            value = b""
        if undefined:
            continue
        if implicit:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None
        else:
            vr = element.VR
        if vr == "SQ":
            continue
        if isinstance(element, RawDataElement) or not element.value:
            expected[tag] = bytes(value).rstrip(b"\0 ").decode("latin-1")
        else:
            # pydicom converts a Private Creator when it resolves, through it, the VR of an
            # implicit VR private element after it (an empty private sequence): the text is
            # what was read.
            assert isinstance(element.value, str), element
            expected[tag] = element.value.rstrip("\0 ")
    return expected


# ---------------------------------------------------------------------------------------------
# Generated data sets

uids = st.lists(st.integers(0, 10**12), min_size=2, max_size=5).map(
    lambda parts: ".".join(str(part) for part in parts)
)
# Trailing spaces on purpose: peek_elements strips them, as it strips padding.
texts = st.text(string.ascii_uppercase + string.digits + " ^", max_size=12)
codes = st.text(string.ascii_uppercase + string.digits + "_", min_size=1, max_size=16)
blobs = st.binary(max_size=40)

PRIVATE_CREATOR = 0x00090010
PRIVATE_TEXT = 0x00091001
PRIVATE_SEQUENCE = 0x00091002
PRIVATE_BYTES = 0x00091003
PRIVATE_UNKNOWN = 0x00091004
CODE_VALUE = 0x00080100  # only ever inside items here
REFERENCED_SOP_INSTANCE = 0x00081155  # only ever inside items here
PURPOSE_SEQUENCE = 0x0040A170  # only ever inside items here
TOP_LEVEL_SEQUENCES = (
    "ProcedureCodeSequence",
    "ReferencedImageSequence",
    "RequestAttributesSequence",
)

CANDIDATE_TAGS = [
    0x00080016,  # SOP Class UID
    0x00080018,  # SOP Instance UID
    0x00080060,  # Modality
    0x00081032,  # Procedure Code Sequence
    0x00081140,  # Referenced Image Sequence
    PRIVATE_CREATOR,
    PRIVATE_TEXT,
    PRIVATE_SEQUENCE,
    PRIVATE_BYTES,
    PRIVATE_UNKNOWN,
    0x00100010,  # Patient's Name
    0x00100020,  # Patient ID
    0x00100030,  # Patient's Birth Date, never present
    STUDY,
    SERIES,
    0x00200013,  # Instance Number
    0x00280010,  # Rows
    0x00400275,  # Request Attributes Sequence
    0x7FE00010,  # Pixel Data
    0x7FE10010,  # past everything
    CODE_VALUE,
    REFERENCED_SOP_INSTANCE,
    PURPOSE_SEQUENCE,
]


def sequences(depth: int) -> st.SearchStrategy[tuple[Sequence, bool]]:
    """A sequence and whether it is encoded with undefined length."""
    return st.tuples(st.lists(items(depth), max_size=3).map(Sequence), st.booleans())


@st.composite
def items(draw: st.DrawFn, depth: int) -> Dataset:
    item = Dataset()
    if draw(st.booleans()):
        item.CodeValue = draw(codes)
    if draw(st.booleans()):
        item.ReferencedSOPInstanceUID = draw(uids)
    if depth < 2 and draw(st.booleans()):
        sequence, undefined = draw(sequences(depth + 1))
        item.PurposeOfReferenceCodeSequence = sequence
        item["PurposeOfReferenceCodeSequence"].is_undefined_length = undefined
    item.is_undefined_length_sequence_item = draw(st.booleans())
    return item


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    ds = Dataset()

    def maybe(keyword: str, strategy: st.SearchStrategy[Any]) -> None:
        if draw(st.booleans()):
            setattr(ds, keyword, draw(strategy))

    maybe("SOPClassUID", uids)
    maybe("SOPInstanceUID", uids)
    maybe("Modality", codes)
    maybe("PatientName", texts)
    maybe("PatientID", texts)
    maybe("StudyInstanceUID", uids)
    maybe("SeriesInstanceUID", uids)
    maybe("InstanceNumber", st.integers(0, 99999))
    maybe("Rows", st.integers(0, 65535))
    for keyword in TOP_LEVEL_SEQUENCES:
        if draw(st.booleans()):
            sequence, undefined = draw(sequences(0))
            setattr(ds, keyword, sequence)
            ds[keyword].is_undefined_length = undefined
    if draw(st.booleans()):
        ds.add_new(PRIVATE_CREATOR, "LO", "AIODICOM TEST")
        if draw(st.booleans()):
            ds.add_new(PRIVATE_TEXT, "LO", draw(texts))
        if draw(st.booleans()):
            sequence, undefined = draw(sequences(0))
            ds.add_new(PRIVATE_SEQUENCE, "SQ", sequence)
            ds[PRIVATE_SEQUENCE].is_undefined_length = undefined
        if draw(st.booleans()):
            ds.add_new(PRIVATE_BYTES, "OB", draw(blobs))
        if draw(st.booleans()):
            ds.add_new(PRIVATE_UNKNOWN, "UN", draw(blobs))
    if draw(st.booleans()):
        ds.add_new(0x7FE00010, "OB", draw(blobs))
    return ds


@FAST
@given(
    ds=datasets(),
    encoding=st.sampled_from(PLAIN),
    wanted=st.sets(st.sampled_from(CANDIDATE_TAGS), max_size=6),
    as_view=st.booleans(),
)
def test_peek_elements_agrees_with_pydicom(
    ds: Dataset, encoding: tuple[str, bool, bool], wanted: set[int], as_view: bool
) -> None:
    syntax, implicit, little = encoding
    raw = encode(ds, implicit, little)
    data: bytes | memoryview = memoryview(bytearray(raw)) if as_view else raw
    expected = pydicom_top_level_values(raw, implicit, little, wanted)
    assert peek_elements(data, syntax, wanted) == expected
    assert peek_elements(data, syntax, list(wanted)) == expected


@FAST
@given(ds=datasets(), wanted=st.sets(st.sampled_from(CANDIDATE_TAGS), max_size=6))
def test_peek_elements_deflated_agrees_with_pydicom(ds: Dataset, wanted: set[int]) -> None:
    raw = encode(ds, implicit=False, little=True)
    expected = pydicom_top_level_values(raw, False, True, wanted)
    assert peek_elements(deflate(raw), DeflatedExplicitVRLittleEndian, wanted) == expected


@FAST
@given(
    ds=datasets(),
    encoding=st.sampled_from(PLAIN),
    wanted=st.sets(st.sampled_from(CANDIDATE_TAGS), min_size=1, max_size=6),
    data=st.data(),
)
def test_peek_elements_on_truncated_bytes_raises_or_gives_a_part(
    ds: Dataset,
    encoding: tuple[str, bool, bool],
    wanted: set[int],
    data: st.DataObject,
) -> None:
    syntax, implicit, little = encoding
    raw = encode(ds, implicit, little)
    complete = peek_elements(raw, syntax, wanted)
    cut = data.draw(st.integers(0, len(raw)))
    try:
        partial = peek_elements(raw[:cut], syntax, wanted)
    except MalformedDataSetError:
        assert cut < len(raw)
        return
    # What the scan had no need to reach may be missing; nothing found can differ.
    assert partial.items() <= complete.items()


# ---------------------------------------------------------------------------------------------
# Hand-made data sets: where exactly truncation and bad structure are detected


def fixed_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    inner = Dataset()
    inner.CodeValue = "12345"
    inner.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([inner, inner])
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.PatientID = "PID-7"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.2"
    ds.add_new(0x7FE00010, "OB", bytes(64))
    return ds


def offset_of_tag(raw: bytes, tag: int, little: bool) -> int:
    offset = raw.index(struct.pack("<HH" if little else ">HH", tag >> 16, tag & 0xFFFF))
    return offset


@pytest.mark.parametrize(("syntax", "implicit", "little"), PLAIN)
def test_peek_elements_truncation_points(syntax: str, implicit: bool, little: bool) -> None:
    raw = encode(fixed_dataset(), implicit, little)
    series_at = offset_of_tag(raw, SERIES, little)
    sequence_at = offset_of_tag(raw, 0x00081140, little)
    patient_at = offset_of_tag(raw, 0x00100020, little)
    assert peek_elements(raw[: series_at + 20], syntax, [STUDY])[STUDY].endswith(".1")
    must_raise = {
        "in the first header": 3,
        "in a header on the way": patient_at + 5,
        "in an undefined-length sequence on the way": sequence_at + 30,
        "just after an item header": sequence_at + (8 if implicit else 12) + 8,
        "in the wanted value": series_at + 12,
        "in the wanted element's header": series_at + 6,
    }
    for where, cut in must_raise.items():
        with pytest.raises(MalformedDataSetError):
            peek_elements(raw[:cut], syntax, [SERIES])
            pytest.fail(f"no error for a cut {where}")
    # A cut right between two elements, or inside a value the scan does not need, is simply
    # where the data set ends.
    assert peek_elements(raw[:series_at], syntax, [SERIES]) == {}
    assert peek_elements(raw[: patient_at + 10], syntax, [SERIES]) == {}
    # Bytes after the last element that cannot be a header are not a data set's end.
    with pytest.raises(MalformedDataSetError):
        peek_elements(raw + b"\0\0\0", syntax, [0x7FE10010])


@pytest.mark.parametrize(("syntax", "implicit", "little"), PLAIN)
def test_peek_elements_reads_no_element_past_the_highest_wanted_tag(
    syntax: str, implicit: bool, little: bool
) -> None:
    raw = encode(fixed_dataset(), implicit, little)
    series_at = offset_of_tag(raw, SERIES, little)
    # The Study Instance UID is the first element past (0010,0030); what follows it would
    # not scan, and is never looked at.
    cut = raw[: series_at + 3]
    wanted = [0x00100020, 0x00100030]
    assert peek_elements(cut, syntax, wanted) == {0x00100020: "PID-7"}
    with pytest.raises(MalformedDataSetError):
        peek_elements(cut, syntax, [STUDY, 0x0020000F])


def test_peek_elements_truncated_long_explicit_header() -> None:
    for syntax, _, little in PLAIN[1:]:
        raw = encode(fixed_dataset(), implicit=False, little=little)
        sequence_at = offset_of_tag(raw, 0x00081140, little)
        # The 8 bytes of tag, VR and reserved are there; the 4-byte length is not.
        with pytest.raises(MalformedDataSetError):
            peek_elements(raw[: sequence_at + 10], syntax, [SERIES])


def _explicit(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    if vr in (b"SQ", b"OB", b"UN"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, size) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, size) + value


def _item(value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHI", 0xFFFE, 0xE000, size) + value


ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
STUDY_ELEMENT = _explicit(STUDY, b"UI", b"1.2.3\0")


def nested(levels: int) -> bytes:
    """``levels`` undefined-length sequences, each in an undefined-length item of the last."""
    inner = b""
    for _ in range(levels):
        inner = (
            _explicit(0x00081140, b"SQ", b"", UNDEFINED)
            + _item(b"", UNDEFINED)
            + inner
            + ITEM_END
            + SEQUENCE_END
        )
    return inner


def test_peek_elements_nesting_limit() -> None:
    # 65 levels (0 to 64 below the top) are scanned; one more is refused as hostile.
    assert peek_elements(nested(65) + STUDY_ELEMENT, ExplicitVRLittleEndian, [STUDY]) == {
        STUDY: "1.2.3"
    }
    with pytest.raises(MalformedDataSetError):
        peek_elements(nested(66) + STUDY_ELEMENT, ExplicitVRLittleEndian, [STUDY])


def test_peek_elements_sequence_without_items_is_malformed() -> None:
    data = (
        _explicit(0x00081140, b"SQ", b"", UNDEFINED)
        + _explicit(0x00080060, b"CS", b"CT")
        + SEQUENCE_END
        + STUDY_ELEMENT
    )
    with pytest.raises(MalformedDataSetError, match="expected an item tag"):
        peek_elements(data, ExplicitVRLittleEndian, [STUDY])


def _implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, size) + value


# CP-246: an undefined-length UN holds implicit VR little endian items. Read as explicit VR,
# the length of (0010,0010) would be taken for a VR and the scan would go astray.
UN_CONTENT = (
    _item(b"", UNDEFINED)
    + _implicit(0x00100010, b"AB")
    + _implicit(0x00091020, b"", UNDEFINED)
    + _implicit(0xFFFEE000, _implicit(0x00100020, b"CD"))
    + SEQUENCE_END
    + ITEM_END
    + SEQUENCE_END
)


def test_peek_elements_undefined_length_un_holds_implicit_items() -> None:
    top_level = _explicit(0x00091010, b"UN", b"", UNDEFINED) + UN_CONTENT
    in_an_item = (
        _explicit(0x00081140, b"SQ", b"", UNDEFINED)
        + _item(b"", UNDEFINED)
        + _explicit(0x00091010, b"UN", b"", UNDEFINED)
        + UN_CONTENT
        + ITEM_END
        + SEQUENCE_END
    )
    for data in (top_level, in_an_item):
        found = peek_elements(data + STUDY_ELEMENT, ExplicitVRLittleEndian, [0x00100010, STUDY])
        assert found == {STUDY: "1.2.3"}


def test_peek_elements_skips_encapsulated_pixel_data_and_defined_items() -> None:
    # Undefined-length OB (encapsulated pixel data) holds defined-length items; a wanted tag
    # past it is still reached.
    data = (
        _explicit(0x00081140, b"SQ", b"", UNDEFINED)
        + _item(_explicit(0x00080100, b"SH", b"AB"))
        + SEQUENCE_END
        + _explicit(0x7FE00010, b"OB", b"", UNDEFINED)
        + _item(b"")
        + _item(b"\xff\xd8\xff\xd9")
        + SEQUENCE_END
        + _explicit(0x7FE10010, b"LO", b"AFTER ")
    )
    assert peek_elements(data, JPEGBaseline8Bit, [0x00080100, 0x7FE10010]) == {0x7FE10010: "AFTER"}


def test_peek_elements_keeps_non_text_bytes() -> None:
    data = _explicit(0x00280010, b"US", b"\x00\x02") + _explicit(0x00290010, b"LO", b"\xe9t\xe9")
    assert peek_elements(data, ExplicitVRLittleEndian, [0x00280010, 0x00290010]) == {
        0x00280010: "\x00\x02",
        0x00290010: "été",
    }


def test_peek_uids_on_views() -> None:
    raw = encode(fixed_dataset(), implicit=False, little=True)
    # A view of another format than bytes, and a slice, are scanned as the bytes they cover.
    for data in (memoryview(bytearray(raw)).cast("H"), memoryview(b"xx" + raw)[2:]):
        instance = Instance(CTImageStorage, "1.2.3", ExplicitVRLittleEndian, data)
        assert instance.peek_uids() == (
            "1.2.826.0.1.3680043.2.1125.1",
            "1.2.826.0.1.3680043.2.1125.2",
        )


# ---------------------------------------------------------------------------------------------
# File Meta Information: byte for byte what the encoder gave before it cached


def reference_encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
    source_ae_title: str | None = None,
) -> bytes:
    def text_value(value: str, *, name: str, max_length: int, pad: bytes) -> bytes:
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise FileMetaError(f"{name} {value!r} is not ASCII") from None
        if not raw or len(raw) > max_length:
            raise FileMetaError(f"{name} {value!r} must be 1 to {max_length} characters long")
        return raw + pad if len(raw) % 2 else raw

    def short_element(element: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value

    def uid(element: int, name: str, value: str) -> bytes:
        encoded = text_value(value.rstrip("\0 "), name=name, max_length=64, pad=b"\0")
        return short_element(element, b"UI", encoded)

    body = [
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
        uid(0x0002, "Media Storage SOP Class UID", sop_class_uid),
        uid(0x0003, "Media Storage SOP Instance UID", sop_instance_uid),
        uid(0x0010, "Transfer Syntax UID", transfer_syntax_uid),
        uid(0x0012, "Implementation Class UID", implementation_class_uid),
    ]
    if implementation_version_name:
        name = text_value(
            implementation_version_name, name="Implementation Version Name", max_length=16, pad=b" "
        )
        body.append(short_element(0x0013, b"SH", name))
    if source_ae_title and source_ae_title.strip():
        title = text_value(
            source_ae_title.strip(), name="Source Application Entity Title", max_length=16, pad=b" "
        )
        body.append(short_element(0x0016, b"AE", title))
    rest = b"".join(body)
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(rest)) + rest


META_CASES = [
    # odd and even lengths of every UID, no / blank / padded / odd / even source AE titles
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.3",
        transfer_syntax_uid="1.2.840.10008.1.2",
    ),
    dict(
        sop_class_uid=MRImageStorage,
        sop_instance_uid="1.2.34",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        source_ae_title="PACS",
    ),
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.345",
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        source_ae_title="ODD",
    ),
    dict(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        sop_instance_uid="2.25.1234",
        transfer_syntax_uid="1.2.840.10008.1.2.2",
        source_ae_title="  STORESCU  ",
    ),
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.3.4\0",
        transfer_syntax_uid="1.2.840.10008.1.2.1 ",
        source_ae_title="   ",
    ),
    dict(
        sop_class_uid=CTImageStorage + "\0",
        sop_instance_uid="9" * 64,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        source_ae_title="",
    ),
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.3",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_version_name=None,
        source_ae_title="A" * 16,
    ),
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.3",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_version_name="",
        source_ae_title="AE",
    ),
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.3",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_class_uid="1.2.3.4.5",
        implementation_version_name="ODDNAME",
    ),
    dict(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.30",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_class_uid="1.2.3.4",
        implementation_version_name="EVEN",
    ),
]


@pytest.mark.parametrize("case", META_CASES)
def test_encode_file_meta_is_byte_identical(case: dict[str, Any]) -> None:
    expected = reference_encode_file_meta(**case)
    # Twice: the second call comes from the cache of the shared parts.
    assert encode_file_meta(**case) == expected
    assert encode_file_meta(**case) == expected


def test_part10_header_is_byte_identical_and_readable() -> None:
    for sop_instance_uid in ("1.2.3", "1.2.34", "1.2.345", "1.2.3456"):
        for source_ae_title in (None, "PACS", "ODD"):
            instance = Instance(
                CTImageStorage,
                sop_instance_uid,
                ExplicitVRLittleEndian,
                _explicit(0x00080060, b"CS", b"CT"),
                source_ae_title,
            )
            header = part10_header(instance)
            assert header == PREAMBLE + reference_encode_file_meta(
                sop_class_uid=CTImageStorage,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                source_ae_title=source_ae_title,
            )
            ds = dcmread(BytesIO(header + instance.data))
            assert ds.file_meta.MediaStorageSOPInstanceUID == sop_instance_uid
            assert ds.file_meta.get("SourceApplicationEntityTitle") == source_ae_title
            assert ds.Modality == "CT"
    assert part10_header(
        instance, implementation_class_uid="1.2.3", implementation_version_name=None
    ) == PREAMBLE + reference_encode_file_meta(
        sop_class_uid=CTImageStorage,
        sop_instance_uid="1.2.3456",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        implementation_class_uid="1.2.3",
        implementation_version_name=None,
        source_ae_title="ODD",
    )


meta_text = st.text(string.ascii_letters + string.digits + " .\0", max_size=20) | st.sampled_from(
    ["", "é", "1.2.3", "X" * 17, "9" * 65]
)


@settings(max_examples=150, deadline=None)
@given(
    sop_class_uid=meta_text,
    sop_instance_uid=meta_text,
    transfer_syntax_uid=st.sampled_from([ImplicitVRLittleEndian, "1.2.840.10008.1.2.1", "é"]),
    implementation_version_name=st.none() | meta_text,
    source_ae_title=st.none() | meta_text,
)
def test_encode_file_meta_matches_reference_and_its_errors(**case: Any) -> None:
    try:
        expected = reference_encode_file_meta(**case)
    except FileMetaError as exc:
        # The same first complaint, in element order, whatever is cached.
        with pytest.raises(FileMetaError) as caught:
            encode_file_meta(**case)
        assert str(caught.value) == str(exc)
        return
    assert encode_file_meta(**case) == expected


def identified_dataset() -> Dataset:
    ds = fixed_dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.3"
    return ds


@pytest.mark.parametrize(("syntax", "implicit", "little"), PLAIN)
def test_peek_prefix_answers_only_when_every_tag_is_within(
    syntax: str, implicit: bool, little: bool
) -> None:
    raw = encode(identified_dataset(), implicit, little)
    series_at = offset_of_tag(raw, SERIES, little)
    whole = peek_elements(raw, syntax, IDENTIFYING_TAGS)
    assert len(whole) == 4
    # Every prefix that holds the four values gives exactly them.
    for cut in (len(raw), series_at + 40, len(raw) - 10):
        assert peek_prefix(raw[:cut], syntax, IDENTIFYING_TAGS) == whole
    # Cut before (or inside) Series Instance UID: unknown, never "absent" and never a part.
    for cut in (series_at, series_at + 6, series_at + 12, 3):
        assert peek_prefix(raw[:cut], syntax, IDENTIFYING_TAGS) is None
    # A tag the data set lacks cannot be told from one further on: unknown as well.
    del_sop = identified_dataset()
    del del_sop.SOPInstanceUID
    assert peek_prefix(encode(del_sop, implicit, little), syntax, IDENTIFYING_TAGS) is None


def test_peek_prefix_leaves_deflated_data_sets_to_the_whole() -> None:
    raw = deflate(encode(identified_dataset(), False, True))
    assert len(peek_elements(raw, DeflatedExplicitVRLittleEndian, IDENTIFYING_TAGS)) == 4
    assert peek_prefix(raw, DeflatedExplicitVRLittleEndian, IDENTIFYING_TAGS) is None


@pytest.mark.parametrize(("syntax", "implicit", "little"), PLAIN)
def test_instance_sop_uids_are_read_even_when_the_data_set_breaks_later(
    syntax: str, implicit: bool, little: bool
) -> None:
    raw = encode(identified_dataset(), implicit, little)
    patient_at = offset_of_tag(raw, 0x00100020, little)
    instance = Instance(CTImageStorage, "1.2.3", syntax, raw)
    assert instance.peek_sop_uids() == (CTImageStorage, "1.2.826.0.1.3680043.2.1125.3")
    assert instance.peek_uids() == (
        "1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.2"
    )
    # Broken after the SOP UIDs: they are still read; the study and series ones are not.
    broken = Instance(CTImageStorage, "1.2.3", syntax, raw[: patient_at + 5])
    assert broken.peek_sop_uids() == (CTImageStorage, "1.2.826.0.1.3680043.2.1125.3")
    with pytest.raises(MalformedDataSetError):
        broken.peek_uids()
