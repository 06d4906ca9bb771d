"""The per-match fast path of C-FIND: ``decode_dataset`` reads flat little endian data sets
itself, and must give exactly the Dataset pydicom's ``read_dataset`` gives (same raw elements,
same state) and exactly the errors it gave before for anything malformed; ``MatchingKeys``
compares single raw UIDs without building lists."""

from __future__ import annotations

import copy
import pickle
import warnings
import zlib
from io import BytesIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from aiodicom import datasets
from aiodicom.datasets import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DatasetDecodeError,
    decode_dataset,
    encode_dataset,
)
from aiodicom.matching import MatchingKeys
from aiodicom.query import Query
from aiodicom.services.find import _PENDING
from aiodicom.status import StatusCategory, status_category

LITTLE_ENDIAN = [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN]
STUDY = "2.25.335083460977638256995474152657123576110"
SERIES = "2.25.71329497619463228969666477527884682198"


def identifier(sop_instance_uid: str = "2.25.17188422917522712726180784567651300640") -> Dataset:
    """A response identifier as dcmqrscp sends it for an IMAGE query."""
    ds = Dataset()
    ds.SOPInstanceUID = sop_instance_uid
    ds.QueryRetrieveLevel = "IMAGE"
    ds.RetrieveAETitle = "QRSCP"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.InstanceNumber = "1"
    return ds


def rich() -> Dataset:
    """Most VRs, empty values, a defined-length sequence, a private UN element, UTF-8."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDate = "20240115"
    ds.StudyTime = ""
    ds.AccessionNumber = None
    ds.Modality = "CT"
    ds.RetrieveAETitle = "QRSCP"
    ds.ReferringPhysicianName = "山田^太郎"
    ds.StudyDescription = "Müller"
    ds.PatientComments = "  leading spaces count in LT"
    ds.PatientWeight = "72.5"
    ds.InstanceNumber = None
    ds.Rows = 512
    ds.Columns = None
    ds.SimpleFrameList = [1, 2, 3]
    ds.RetrieveURL = "https://example.invalid/studies/1"
    ds.LongCodeValue = "x" * 70
    ds.TextValue = "free text"
    ds.NumberOfFrames = "2"
    ds.SliceLocation = None
    ds.EncapsulatedDocument = b"\x01\x02\x03\x04"
    ds.add_new(0x00091002, "OW", b"\x05\x06")
    item = Dataset()
    item.CodeValue = "CT"
    item.CodeMeaning = "Computed Tomography"
    ds.ProcedureCodeSequence = [item]
    ds.add_new(0x00091001, "UN", b"\x00\x01")
    return ds


def reference(data: bytes, transfer_syntax: str) -> Dataset:
    """pydicom's own reading of the same bytes."""
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax != EXPLICIT_VR_BIG_ENDIAN
    return read_dataset(BytesIO(data), implicit, little)


def state(ds: Dataset) -> dict[str, object]:
    return {name: value for name, value in vars(ds).items() if name != "_dict"}


def assert_same(ours: Dataset, theirs: Dataset) -> None:
    """Same elements, raw as pydicom left them, same order, same Dataset state."""
    assert type(ours) is Dataset
    tags = list(theirs.keys())  # not iteration, which would convert every element
    assert list(ours.keys()) == tags
    for tag in tags:
        mine = ours.get_item(tag, keep_deferred=True)
        expected = theirs.get_item(tag, keep_deferred=True)
        assert type(mine) is type(expected)
        if isinstance(expected, RawDataElement):
            assert isinstance(mine, RawDataElement)
            assert mine == expected
            assert type(mine.VR) is type(expected.VR)
            assert type(mine.value) is type(expected.value)
            assert type(mine.tag) is type(expected.tag)
        else:  # a sequence pydicom read at once; comparing converts its items
            assert converted(mine) == converted(expected)
    assert state(ours) == state(theirs)
    assert ours.original_encoding == theirs.original_encoding
    assert ours.original_character_set == theirs.original_character_set
    # Converted values and their text (character set applied) agree too, or fail alike.
    assert converted(ours) == converted(theirs)


def converted(ds: object) -> str:
    try:
        return str(ds)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def old_outcome(data: bytes, transfer_syntax: str) -> Dataset | str:
    """What decode_dataset did before the fast path: pydicom's reader and the truncation
    checks (kept as the general path), as a Dataset or the error's message."""
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    try:
        return datasets._decode_with_pydicom(data, implicit, True, transfer_syntax)
    except DatasetDecodeError as exc:
        return str(exc)


def new_outcome(data: bytes, transfer_syntax: str) -> Dataset | str:
    try:
        return decode_dataset(data, transfer_syntax)
    except DatasetDecodeError as exc:
        return str(exc)


def assert_same_outcome(data: bytes, transfer_syntax: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about some garbage; both paths alike
        old = old_outcome(data, transfer_syntax)
        new = new_outcome(data, transfer_syntax)
        if isinstance(old, str):
            assert new == old
        else:
            assert isinstance(new, Dataset)
            assert_same(new, old)


# --- the fast path gives pydicom's Dataset ----------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", [*LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN])
@pytest.mark.parametrize("make", [identifier, rich])
def test_flat_data_sets_decode_as_pydicom_reads_them(transfer_syntax: str, make: object) -> None:
    assert callable(make)
    data = encode_dataset(make(), transfer_syntax)
    plain = reference_bytes(data, transfer_syntax)
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    assert datasets._read_flat(plain, implicit) is not None  # the fast path, not the fallback
    for received in (data, bytearray(data), memoryview(data)):
        assert_same(decode_dataset(received, transfer_syntax), reference(data, transfer_syntax))


def reference_bytes(data: bytes, transfer_syntax: str) -> bytes:
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    return data


def test_values_are_bytes_whatever_buffer_they_came_in() -> None:
    data = bytearray(encode_dataset(identifier(), EXPLICIT_VR_LITTLE_ENDIAN))
    ds = decode_dataset(memoryview(data), EXPLICIT_VR_LITTLE_ENDIAN)
    data[:] = b"\x00" * len(data)  # a receive buffer reused for the next PDU
    assert type(ds.get_item(0x0020000E).value) is bytes
    assert ds.SeriesInstanceUID == SERIES


def test_decoded_data_sets_share_no_mutable_state() -> None:
    data = encode_dataset(identifier(), EXPLICIT_VR_LITTLE_ENDIAN)
    first = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
    second = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
    for name, value in vars(first).items():
        if isinstance(value, (dict, list, set)):
            assert value is not vars(second)[name], name
    # pydicom caches private blocks per Dataset: a shared cache would leak this one.
    first.private_block(0x0009, "ACME", create=True).add_new(0x01, "LO", "first only")
    with pytest.raises(KeyError):
        second.private_block(0x0009, "ACME")
    first.PatientID = "changed"
    assert "PatientID" not in second
    assert second.SOPInstanceUID == first.SOPInstanceUID


def test_decoded_data_sets_copy_and_pickle() -> None:
    data = encode_dataset(rich(), EXPLICIT_VR_LITTLE_ENDIAN)
    ds = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
    for copied in (copy.deepcopy(ds), pickle.loads(pickle.dumps(ds)), copy.copy(ds)):
        assert copied == ds
        assert copied.ReferringPhysicianName == "山田^太郎"
        assert encode_dataset(copied, EXPLICIT_VR_LITTLE_ENDIAN) == data


def test_the_cheap_construction_is_in_use() -> None:
    # If a pydicom upgrade changes what Dataset.__init__ sets, the fast path falls back to
    # constructing each Dataset (still correct, as the tests above check, but slower).
    assert datasets._BLANK is not None


@pytest.mark.parametrize(
    "charset", ["ISO_IR 100", ["", "ISO 2022 IR 87"], "ISO_IR 192", "", "ISO_IR 999"]
)
@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_character_sets_as_pydicom_reads_them(charset: object, transfer_syntax: str) -> None:
    ds = identifier()
    ds.SpecificCharacterSet = charset
    data = encode_dataset(ds, transfer_syntax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unknown character set
        assert_same(decode_dataset(data, transfer_syntax), reference(data, transfer_syntax))


def test_a_known_character_set_is_converted_once_and_each_dataset_gets_its_own() -> None:
    ds = identifier()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "山田^太郎"
    data = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    first = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
    second = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
    for ours in (first, second):
        assert_same(ours, reference(data, EXPLICIT_VR_LITTLE_ENDIAN))
    assert first.original_character_set is not second.original_character_set
    assert second.PatientName == "山田^太郎"


@pytest.mark.parametrize(
    ("charset", "warns"), [("ISO_IR 999", True), ("ISO-IR 100", True), (" ISO_IR 100", False)]
)
def test_a_dubious_character_set_warns_every_time_as_pydicom_does(
    charset: str, warns: bool
) -> None:
    ds = identifier()
    ds.SpecificCharacterSet = charset
    data = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            decoded = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            expected = reference(data, EXPLICIT_VR_LITTLE_ENDIAN)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
        assert bool(ours) == warns
        assert_same(decoded, expected)


def test_a_malformed_character_set_is_refused_as_before() -> None:
    ds = identifier()
    ds.SpecificCharacterSet = "ISO_IR 192"
    data = bytearray(encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN))
    data[data.index(b"ISO_IR")] = 0  # "\0SO_IR 192": pydicom's conversion raises
    with pytest.raises(DatasetDecodeError, match="cannot decode the data set as Explicit VR"):
        decode_dataset(bytes(data), EXPLICIT_VR_LITTLE_ENDIAN)
    assert_same_outcome(bytes(data), EXPLICIT_VR_LITTLE_ENDIAN)


# --- what the fast path leaves to pydicom ------------------------------------------------------


def undefined_length_sequence() -> Dataset:
    ds = rich()
    ds["ProcedureCodeSequence"].is_undefined_length = True
    return ds


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_undefined_lengths_go_to_pydicom(transfer_syntax: str) -> None:
    data = encode_dataset(undefined_length_sequence(), transfer_syntax)
    assert datasets._read_flat(data, transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN) is None
    decoded = decode_dataset(data, transfer_syntax)
    assert_same(decoded, reference(data, transfer_syntax))
    assert decoded.ProcedureCodeSequence[0].CodeMeaning == "Computed Tomography"


def test_big_endian_goes_to_pydicom() -> None:
    data = encode_dataset(rich(), EXPLICIT_VR_BIG_ENDIAN)
    ours = decode_dataset(data, EXPLICIT_VR_BIG_ENDIAN)
    assert ours.original_encoding == (False, False)
    assert_same(ours, reference(data, EXPLICIT_VR_BIG_ENDIAN))


def test_implicit_vr_received_in_an_explicit_syntax_goes_to_pydicom() -> None:
    # A peer that mislabels its encoding: pydicom notices (and warns); so must we.
    data = encode_dataset(identifier(), IMPLICIT_VR_LITTLE_ENDIAN)
    assert datasets._read_flat(data, False) is None
    with pytest.warns(UserWarning):
        ours = decode_dataset(data, EXPLICIT_VR_LITTLE_ENDIAN)
    assert ours.SeriesInstanceUID == SERIES
    assert ours.original_encoding == (True, True)


def test_an_unknown_vr_goes_to_pydicom() -> None:
    data = bytearray(encode_dataset(identifier(), EXPLICIT_VR_LITTLE_ENDIAN))
    at = data.index(b"CS\x06\x00IMAGE ")
    data[at : at + 2] = b"QQ"  # two capitals, no VR: pydicom reads a 2-byte length
    assert datasets._read_flat(bytes(data), False) is None
    assert_same_outcome(bytes(data), EXPLICIT_VR_LITTLE_ENDIAN)


def test_a_delimiter_at_the_top_level_goes_to_pydicom() -> None:
    data = encode_dataset(identifier(), IMPLICIT_VR_LITTLE_ENDIAN)
    # An item delimitation item: pydicom stops reading there, and the bytes left over are
    # then reported as a truncated header.
    broken = data[:-10] + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + data[-10:]
    assert datasets._read_flat(broken, True) is None
    assert isinstance(old_outcome(broken, IMPLICIT_VR_LITTLE_ENDIAN), str)
    assert_same_outcome(broken, IMPLICIT_VR_LITTLE_ENDIAN)


# --- malformed identifiers: the same errors as before -----------------------------------------


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
@pytest.mark.parametrize("make", [identifier, rich])
def test_every_truncation_is_refused_as_before(transfer_syntax: str, make: object) -> None:
    assert callable(make)
    data = encode_dataset(make(), transfer_syntax)
    boundaries = element_boundaries(data, transfer_syntax)
    for cut in range(1, len(data)):
        outcome = new_outcome(data[:cut], transfer_syntax)
        if cut in boundaries:
            assert isinstance(outcome, Dataset), cut  # a whole, shorter data set
            assert_same(outcome, reference(data[:cut], transfer_syntax))
        else:
            assert isinstance(outcome, str), cut
            assert outcome == old_outcome(data[:cut], transfer_syntax)


def element_boundaries(data: bytes, transfer_syntax: str) -> set[int]:
    ds = reference(data, transfer_syntax)
    tags = ds.keys()  # not iteration, which would convert every element
    return {
        elem.value_tell + elem.length
        for elem in (ds.get_item(tag, keep_deferred=True) for tag in tags)
        if isinstance(elem, RawDataElement)
    }


def test_truncation_messages() -> None:
    data = encode_dataset(identifier(), EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError, match=r"\(0020,0013\) is truncated: 1 of its 2 bytes"):
        decode_dataset(data[:-1], EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError, match="3 bytes after the last element"):
        decode_dataset(data[:-7], EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError, match="5 bytes that hold no whole element"):
        decode_dataset(data[:5], EXPLICIT_VR_LITTLE_ENDIAN)
    long_length = encode_dataset(rich(), EXPLICIT_VR_LITTLE_ENDIAN)
    cut = long_length.index(b"UT\x00\x00") + 6  # inside the 4-byte length of a UT element
    with pytest.raises(DatasetDecodeError, match="cannot decode the data set as Explicit VR"):
        decode_dataset(long_length[:cut], EXPLICIT_VR_LITTLE_ENDIAN)
    assert len(decode_dataset(b"", IMPLICIT_VR_LITTLE_ENDIAN)) == 0


def test_a_truncated_deflated_identifier_is_refused() -> None:
    data = encode_dataset(identifier(), DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError, match="deflated data set is truncated"):
        decode_dataset(data[: len(data) // 2], DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError, match="cannot decode the data set as Deflated"):
        decode_dataset(b"\x07garbage", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    transfer_syntax=st.sampled_from(LITTLE_ENDIAN),
    make=st.sampled_from([identifier, rich, undefined_length_sequence]),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.binary(max_size=4)), max_size=3
    ),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_damaged_identifiers_decode_or_fail_exactly_as_before(
    transfer_syntax: str, make: object, edits: list[tuple[int, bytes]], cut: int
) -> None:
    assert callable(make)
    data = bytearray(encode_dataset(make(), transfer_syntax))
    for at, patch in edits:
        at %= len(data)
        data[at : at + len(patch)] = patch
    data = data[: max(cut % (len(data) + 1), 0)] if cut % 3 == 0 else data
    assert_same_outcome(bytes(data), transfer_syntax)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), transfer_syntax=st.sampled_from(LITTLE_ENDIAN))
def test_random_bytes_decode_or_fail_exactly_as_before(data: bytes, transfer_syntax: str) -> None:
    assert_same_outcome(data, transfer_syntax)


TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), max_size=20
)


@settings(max_examples=150, deadline=None)
@given(
    transfer_syntax=st.sampled_from(LITTLE_ENDIAN),
    name=TEXT,
    description=TEXT,
    number=st.one_of(st.none(), st.integers(min_value=-(2**31), max_value=2**31 - 1)),
    rows=st.one_of(st.none(), st.integers(min_value=0, max_value=65535)),
    blob=st.binary(max_size=40),
    uids=st.lists(st.from_regex(r"[12](\.[1-9][0-9]{0,8}){1,6}", fullmatch=True), max_size=3),
)
def test_generated_flat_data_sets_decode_as_pydicom_reads_them(
    transfer_syntax: str, name: str, description: str, number: int | None, rows: int | None,
    blob: bytes, uids: list[str],
) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.StudyDescription = description
    ds.InstanceNumber = number
    ds.Rows = rows
    ds.SOPInstanceUID = uids
    if blob:
        ds.add_new(0x00091010, "OB", blob)
    data = encode_dataset(ds, transfer_syntax)
    assert datasets._read_flat(data, transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN) is not None
    assert_same(decode_dataset(data, transfer_syntax), reference(data, transfer_syntax))


# --- matching on the raw elements of the fast path --------------------------------------------


QUERY = Query.image(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES).to_dataset()


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
@pytest.mark.parametrize(
    ("series", "contradicting"),
    [
        (SERIES, []),
        (SERIES + "\0", []),
        (" " + SERIES, []),
        ("2.25.1", ["SeriesInstanceUID"]),
        ([SERIES, "2.25.1"], []),  # a multi-valued response matches if any value does
        (["2.25.1", "2.25.2"], ["SeriesInstanceUID"]),
        ("", []),  # missing, not contradicting
    ],
)
def test_single_raw_uids_are_compared_like_lists(
    transfer_syntax: str, series: object, contradicting: list[str]
) -> None:
    ds = identifier()
    ds.SeriesInstanceUID = series
    keys = MatchingKeys(QUERY)
    raw = decode_dataset(encode_dataset(ds, transfer_syntax), transfer_syntax)
    assert keys.contradictions(raw) == contradicting
    converted = decode_dataset(encode_dataset(ds, transfer_syntax), transfer_syntax)
    for _elem in converted:  # iterating converts every raw element: the general path
        pass
    assert keys.contradictions(converted) == contradicting


def test_matching_keys_find_tags_of_any_origin() -> None:
    # The keys look tags up by the objects the fast path keys data sets with; a data set
    # built by hand (other tag objects) must be checked all the same.
    keys = MatchingKeys(QUERY)
    ds = identifier()
    ds.StudyInstanceUID = "2.25.9"
    assert keys.contradictions(ds) == ["StudyInstanceUID"]
    assert keys.missing(Dataset()) == ["StudyInstanceUID", "SeriesInstanceUID"]


def test_shared_tags_are_the_decoded_keys() -> None:
    ds = decode_dataset(encode_dataset(identifier(), EXPLICIT_VR_LITTLE_ENDIAN),
                        EXPLICIT_VR_LITTLE_ENDIAN)
    tags = ds.keys()
    for tag in tags:
        assert datasets.shared_tag(int(tag)) is tag
    assert datasets.shared_tag(0xFFFEE000) == 0xFFFEE000


def test_pending_codes_are_those_status_category_calls_pending() -> None:
    pending = {code for code in range(0x10000)
               if status_category(code) is StatusCategory.PENDING}
    assert pending == _PENDING


def test_a_query_is_prepared_once_per_value_and_the_cache_is_bounded() -> None:
    """Equal queries share their identifier and encodings; at most PREPARED_QUERIES are
    kept."""
    from aiodicom.query import Query
    from aiodicom.services import find as find_module

    find_module._prepared.clear()
    first = find_module._prepare(Query.study(PatientID="A*"))
    assert find_module._prepare(Query.study(PatientID="A*")) is first
    assert find_module._prepare(Query.study(PatientID="B*")) is not first
    explicit = "1.2.840.10008.1.2.1"
    assert first.encoded(explicit) is first.encoded(explicit)
    listed = find_module._prepare(Query.series(StudyInstanceUID=["1.2.3", "1.2.4"]))
    assert find_module._prepare(Query.series(StudyInstanceUID=["1.2.3", "1.2.4"])) is listed
    assert find_module._prepare(Query.series(StudyInstanceUID=["1.2.3"])) is not listed
    for n in range(find_module.PREPARED_QUERIES + 10):
        find_module._prepare(Query.study(PatientID=f"P{n}"))
    assert len(find_module._prepared) == find_module.PREPARED_QUERIES


@pytest.mark.parametrize("transfer_syntax", LITTLE_ENDIAN)
def test_a_tag_twice_is_decided_as_before(transfer_syntax: str) -> None:
    """Found by the property test above: with a tag twice, pydicom keeps the first one's place,
    and the truncation check looked at the wrong element; the fast path must not answer
    differently from the general one."""
    data = bytearray(encode_dataset(identifier(), transfer_syntax))
    data[:4] = b"\x00\x00\x00\x00"  # the first element becomes (0000,0000)
    data += b"\x00\x00\x00\x00" + (b"UL\x04\x00" if transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN
                                   else b"\x04\x00\x00\x00") + b"\x01\x00\x00\x00"
    assert_same_outcome(bytes(data), transfer_syntax)
