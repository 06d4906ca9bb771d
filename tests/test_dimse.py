"""DIMSE command set codec, fragmentation, reassembly, and data set encoding."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from aiodicom import dimse
from aiodicom.datasets import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DatasetDecodeError,
    DatasetEncodeError,
    decode_dataset,
    encode_dataset,
    is_deflated,
    is_encapsulated,
    transfer_syntax_name,
)
from aiodicom.dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_MOVE_RQ,
    C_STORE_RQ,
    C_STORE_RSP,
    DATASET_PRESENT,
    DEFAULT_MAX_FRAGMENT,
    NO_DATASET,
    CommandDecodeError,
    DimseMessage,
    command_name,
    decode_command,
    encode_command,
    encode_store_response,
    fragment_message,
)
from aiodicom.errors import DicomError, DimseError
from aiodicom.pdu import PDataTF, PresentationDataValue
from aiodicom.reassembly import MessageAssembler

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def pydicom_command(**elements: object) -> bytes:
    """The reference encoding: pydicom writing a group-0000 Dataset in Implicit VR LE."""

    def write(ds: Dataset) -> bytes:
        fp = DicomBytesIO()
        fp.is_implicit_VR = True
        fp.is_little_endian = True
        write_dataset(fp, ds)
        return bytes(fp.getvalue())

    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.CommandGroupLength = len(write(ds))
    return write(ds)


def pynetdicom_encode(
    ds: Dataset, implicit_vr: bool = True, little_endian: bool = True, deflated: bool = False
) -> bytes:
    from pynetdicom import dsutils

    encoded = dsutils.encode(ds, implicit_vr, little_endian, deflated)
    assert encoded is not None
    return encoded


def split_elements(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    offset = 0
    while offset < len(data):
        group, element, length = struct.unpack_from("<HHI", data, offset)
        assert group == 0
        out.append((element, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length
    return out


# --- encode_command against reference encoders ----------------------------------------------


def test_c_echo_rq_matches_pynetdicom() -> None:
    from pynetdicom import dimse_messages, dimse_primitives, dsutils

    primitive = dimse_primitives.C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = VERIFICATION
    message = dimse_messages.C_ECHO_RQ()
    message.primitive_to_message(primitive)
    expected = dsutils.encode(message.command_set, True, True)

    ours = encode_command(
        {
            "CommandField": C_ECHO_RQ,
            "MessageID": 1,
            "AffectedSOPClassUID": VERIFICATION,
            "CommandDataSetType": NO_DATASET,
        }
    )
    assert ours == expected


def test_c_find_rq_matches_pynetdicom() -> None:
    from pynetdicom import dimse_messages, dimse_primitives, dsutils

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    primitive = dimse_primitives.C_FIND()
    primitive.MessageID = 513
    primitive.AffectedSOPClassUID = STUDY_ROOT_FIND
    primitive.Priority = 2
    primitive.Identifier = io.BytesIO(pynetdicom_encode(identifier))
    message = dimse_messages.C_FIND_RQ()
    message.primitive_to_message(primitive)
    expected = dsutils.encode(message.command_set, True, True)

    # Keys deliberately out of tag order: the encoder sorts.
    ours = encode_command(
        {
            "CommandDataSetType": DATASET_PRESENT,
            "Priority": 2,
            "MessageID": 513,
            "CommandField": C_FIND_RQ,
            "AffectedSOPClassUID": STUDY_ROOT_FIND,
        }
    )
    assert ours == expected


def test_c_move_rq_matches_pynetdicom() -> None:
    from pynetdicom import dimse_messages, dimse_primitives, dsutils

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    primitive = dimse_primitives.C_MOVE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = STUDY_ROOT_MOVE
    primitive.Priority = 0
    primitive.MoveDestination = "MOVESCP"  # odd length: space padded
    primitive.Identifier = io.BytesIO(pynetdicom_encode(identifier))
    message = dimse_messages.C_MOVE_RQ()
    message.primitive_to_message(primitive)
    expected = dsutils.encode(message.command_set, True, True)

    ours = encode_command(
        {
            "CommandField": C_MOVE_RQ,
            "MessageID": 7,
            "AffectedSOPClassUID": STUDY_ROOT_MOVE,
            "Priority": 0,
            "MoveDestination": "MOVESCP",
            "CommandDataSetType": DATASET_PRESENT,
        }
    )
    assert ours == expected
    assert b"MOVESCP " in ours


def test_c_store_rq_matches_pynetdicom() -> None:
    from pynetdicom import dimse_messages, dimse_primitives, dsutils

    primitive = dimse_primitives.C_STORE()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = CT_IMAGE
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5"  # odd length: NUL padded
    primitive.Priority = 0
    primitive.MoveOriginatorApplicationEntityTitle = "QRSCU"
    primitive.MoveOriginatorMessageID = 9
    primitive.DataSet = io.BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    message = dimse_messages.C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = dsutils.encode(message.command_set, True, True)

    ours = encode_command(
        {
            "CommandField": C_STORE_RQ,
            "MessageID": 3,
            "AffectedSOPClassUID": CT_IMAGE,
            "AffectedSOPInstanceUID": "1.2.3.4.5",
            "Priority": 0,
            "MoveOriginatorApplicationEntityTitle": "QRSCU",
            "MoveOriginatorMessageID": 9,
            "CommandDataSetType": DATASET_PRESENT,
        }
    )
    assert ours == expected


ALL_ELEMENTS: dict[str, object] = {
    "AffectedSOPClassUID": STUDY_ROOT_MOVE,
    "RequestedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
    "CommandField": 0x8021,
    "MessageID": 65535,
    "MessageIDBeingRespondedTo": 12,
    "MoveDestination": "DEST",
    "Priority": 1,
    "CommandDataSetType": NO_DATASET,
    "Status": 0xA801,
    "OffendingElement": [0x00100010, 0x0020000D],
    "ErrorComment": "Unknown destination",
    "ErrorID": 42,
    "AffectedSOPInstanceUID": "1.2.3",
    "RequestedSOPInstanceUID": "1.2.34",
    "EventTypeID": 1,
    "AttributeIdentifierList": [0x00080018],
    "ActionTypeID": 2,
    "NumberOfRemainingSuboperations": 5,
    "NumberOfCompletedSuboperations": 6,
    "NumberOfFailedSuboperations": 7,
    "NumberOfWarningSuboperations": 8,
    "MoveOriginatorApplicationEntityTitle": "ORIGIN",
    "MoveOriginatorMessageID": 99,
}


def test_every_element_matches_pydicom() -> None:
    expected = pydicom_command(**ALL_ELEMENTS)
    assert encode_command(ALL_ELEMENTS) == expected
    assert decode_command(expected) == ALL_ELEMENTS


def test_known_elements_table_is_complete() -> None:
    assert {kw for kw, _, _ in dimse.COMMAND_ELEMENTS} == set(ALL_ELEMENTS) | {"CommandGroupLength"}


# --- encode_command details -------------------------------------------------------------------


def test_group_length_first_and_tag_order() -> None:
    data = encode_command({"Status": 0, "CommandField": C_ECHO_RSP, "CommandGroupLength": 9999})
    elements = split_elements(data)
    assert [el for el, _ in elements] == [0x0000, 0x0100, 0x0900]
    assert struct.unpack("<I", elements[0][1])[0] == len(data) - 12


def test_none_values_are_left_out() -> None:
    data = encode_command({"CommandField": C_ECHO_RSP, "MessageIDBeingRespondedTo": None})
    assert [el for el, _ in split_elements(data)] == [0x0000, 0x0100]


def test_empty_string_is_a_zero_length_element() -> None:
    data = encode_command({"ErrorComment": ""})
    assert split_elements(data)[1] == (0x0902, b"")


def test_padding() -> None:
    elements = dict(
        split_elements(
            encode_command(
                {"AffectedSOPClassUID": "1.2.3", "MoveDestination": "A", "ErrorComment": "abc"}
            )
        )
    )
    assert elements[0x0002] == b"1.2.3\x00"
    assert elements[0x0600] == b"A "
    assert elements[0x0902] == b"abc "


def test_non_ascii_text_is_replaced() -> None:
    data = encode_command({"ErrorComment": "Réfusé"})
    assert decode_command(data)["ErrorComment"] == "R?fus?"


def test_error_comment_is_cut_to_64_characters() -> None:
    data = encode_command({"ErrorComment": "x" * 100})
    assert decode_command(data)["ErrorComment"] == "x" * 64


def test_at_accepts_a_single_int() -> None:
    data = encode_command({"OffendingElement": 0x00100020})
    assert dict(split_elements(data))[0x0901] == b"\x10\x00\x20\x00"
    assert decode_command(data)["OffendingElement"] == [0x00100020]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"NoSuchKeyword": 1}, ValueError),
        ({"(0000,12)": b""}, ValueError),
        ({"(0000,+123)": b""}, ValueError),
        ({"MessageID": 65536}, ValueError),
        ({"MessageID": -1}, ValueError),
        ({"MessageID": "1"}, TypeError),
        ({"AffectedSOPClassUID": 1}, TypeError),
        ({"OffendingElement": [1 << 32]}, ValueError),
        ({"OffendingElement": "x"}, TypeError),
        ({"(0000,4000)": "text"}, TypeError),
    ],
)
def test_encode_rejects_bad_input(fields: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_command(fields)


def test_raw_elements_round_trip() -> None:
    fields = {
        "CommandField": C_ECHO_RQ,
        "(0000,4000)": b"RETIRED!",
        "(0000,0001)": b"\x01\x00\x00\x00",
    }
    data = encode_command(fields)
    assert [el for el, _ in split_elements(data)] == [0x0000, 0x0001, 0x0100, 0x4000]
    assert decode_command(data) == fields


def test_known_element_spelled_as_tag() -> None:
    assert encode_command({"(0000,0110)": 5}) == encode_command({"MessageID": 5})


# --- decode_command leniency and errors -------------------------------------------------------


def element(el: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, el, len(value)) + value


def test_decode_is_lenient() -> None:
    data = (
        element(0x0000, b"\xff\xff\xff\xff")  # wrong group length: ignored
        + element(0x0900, b"\x01\x00")
        + element(0x0100, b"\x01\x80")  # out of order
        + element(0x0900, b"\x02\x00")  # duplicate: the first wins
        + element(0x0002, b"1.2.3 ")  # space padded UI
        + element(0x0600, b" DEST\x00")  # NUL padded AE with a leading space
        + element(0x4000, b"raw")  # unknown, odd length
        + element(0x1020, b"")  # empty US
    )
    assert decode_command(data) == {
        "Status": 1,
        "CommandField": 0x8001,
        "AffectedSOPClassUID": "1.2.3",
        "MoveDestination": "DEST",
        "(0000,4000)": b"raw",
        "NumberOfRemainingSuboperations": None,
    }


def test_decode_accepts_memoryview_and_bytearray() -> None:
    data = encode_command(ALL_ELEMENTS)
    assert decode_command(memoryview(data)) == ALL_ELEMENTS
    assert decode_command(bytearray(data)) == ALL_ELEMENTS
    assert decode_command(memoryview(b"xx" + data)[2:]) == ALL_ELEMENTS


def test_decode_empty() -> None:
    assert decode_command(b"") == {}


@pytest.mark.parametrize(
    ("data", "offset", "words"),
    [
        (element(0x0100, b"\x01\x00") + b"\x00\x00\x10", 10, "truncated element header"),
        (
            element(0x0100, b"\x01\x00") + struct.pack("<HHI", 0, 0x110, 4) + b"\x01",
            10,
            "runs past",
        ),
        (struct.pack("<HHI", 8, 0x16, 0), 0, "not in command group"),
        (struct.pack("<HHI", 0, 0x902, 0xFFFFFFFF), 0, "undefined length"),
        (element(0x0002, b"1.2\x00") + element(0x0110, b"\x01\x00\x00"), 12, "expected 2"),
        (element(0x0901, b"\x10\x00\x10\x00\x20\x00"), 0, "multiple of 4"),
    ],
)
def test_decode_malformed(data: bytes, offset: int, words: str) -> None:
    with pytest.raises(CommandDecodeError) as info:
        decode_command(data)
    assert info.value.offset == offset
    assert words in str(info.value)
    assert isinstance(info.value, DimseError)


def test_decode_every_truncation_fails_or_stops_at_a_boundary() -> None:
    data = encode_command(ALL_ELEMENTS)
    boundaries = set()
    offset = 0
    while offset < len(data):
        boundaries.add(offset)
        offset += 8 + struct.unpack_from("<I", data, offset + 4)[0]
    for cut in range(len(data)):
        if cut in boundaries:
            decode_command(data[:cut])
        else:
            with pytest.raises(CommandDecodeError):
                decode_command(data[:cut])


# --- hypothesis round trip ----------------------------------------------------------------------

_uid = st.lists(st.integers(0, 10**9), min_size=1, max_size=7).map(
    lambda parts: ".".join(map(str, parts))
)
_printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\")
_ae = st.builds(
    lambda s: s.strip(), st.text(_printable | st.just(" "), min_size=1, max_size=16)
).filter(bool)
_lo = st.builds(lambda s: s.strip(), st.text(_printable | st.just(" "), max_size=64))
_us = st.integers(0, 0xFFFF)
_at = st.lists(st.integers(0, 0xFFFFFFFF), max_size=8)
_BY_VR = {"US": _us, "UI": _uid, "AE": _ae, "LO": _lo, "AT": _at}
_KNOWN = {kw: _BY_VR[vr] for kw, _, vr in dimse.COMMAND_ELEMENTS if vr in _BY_VR}
_known_elements = {el for _, el, _ in dimse.COMMAND_ELEMENTS}
_raw = st.dictionaries(
    st.integers(1, 0xFFFF)
    .filter(lambda el: el not in _known_elements)
    .map(lambda el: f"(0000,{el:04X})"),
    st.binary(max_size=20).map(lambda b: b + b"\x00" * (len(b) & 1)),
    max_size=3,
)
commands = st.fixed_dictionaries({}, optional=_KNOWN).flatmap(
    lambda known: _raw.map(lambda raw: {**known, **raw})
)


@settings(max_examples=300, deadline=None)
@given(commands)
def test_round_trip(fields: dict[str, object]) -> None:
    data = encode_command(fields)
    assert decode_command(data) == fields
    elements = split_elements(data)
    assert elements[0][0] == 0
    assert struct.unpack("<I", elements[0][1])[0] == len(data) - 12
    tags = [el for el, _ in elements]
    assert tags == sorted(tags)
    assert all(len(value) % 2 == 0 for _, value in elements)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_garbage_raises_only_command_decode_error(data: bytes) -> None:
    with contextlib.suppress(CommandDecodeError):
        decode_command(data)


# --- DimseMessage -------------------------------------------------------------------------------


def test_message_properties() -> None:
    rq = DimseMessage(1, {"CommandField": C_FIND_RQ, "MessageID": 4, "CommandDataSetType": 1}, b"")
    assert rq.command_field == C_FIND_RQ
    assert rq.is_request and not rq.is_response
    assert rq.message_id == 4
    assert rq.message_id_being_responded_to is None
    assert rq.status is None
    assert rq.has_dataset
    assert rq.name == "C-FIND-RQ"

    rsp = DimseMessage(
        3,
        {
            "CommandField": C_FIND_RSP,
            "MessageIDBeingRespondedTo": 4,
            "CommandDataSetType": NO_DATASET,
            "Status": 0,
        },
    )
    assert rsp.is_response and not rsp.is_request
    assert rsp.message_id_being_responded_to == 4
    assert rsp.status == 0
    assert not rsp.has_dataset
    assert rsp.data is None

    cancel = DimseMessage(1, {"CommandField": C_CANCEL_RQ})
    assert cancel.is_request
    assert not cancel.has_dataset  # no Command Data Set Type at all

    empty = DimseMessage(1, {})
    with pytest.raises(DimseError):
        _ = empty.command_field
    assert empty.name == "command without Command Field"


def test_command_names() -> None:
    assert command_name(0x0001) == "C-STORE-RQ"
    assert command_name(0x8021) == "C-MOVE-RSP"
    assert command_name(0x0FFF) == "C-CANCEL-RQ"
    assert command_name(0x8FFF) == "command 0x8FFF"
    assert command_name(0x8150) == "N-DELETE-RSP"


# --- fragmentation ------------------------------------------------------------------------------


def pdvs(pdus: list[PDataTF]) -> list[PresentationDataValue]:
    return [pdv for pdu in pdus for pdv in pdu.pdvs]


def check_fragments(msg: DimseMessage, max_pdu: int) -> list[PDataTF]:
    pdus = list(fragment_message(msg, max_pdu))
    command: dict[str, object] = {
        "CommandDataSetType": DATASET_PRESENT if msg.data is not None else NO_DATASET
    }
    command.update(msg.command)
    items = pdvs(pdus)
    for pdu in pdus:
        variable_field = sum(4 + 2 + len(pdv.data) for pdv in pdu.pdvs)
        assert variable_field <= (max_pdu or DEFAULT_MAX_FRAGMENT + 6)
        assert all(pdv.context_id == msg.context_id for pdv in pdu.pdvs)
    command_items = [pdv for pdv in items if pdv.is_command]
    data_items = [pdv for pdv in items if not pdv.is_command]
    # Command fragments strictly before data fragments, one last flag for each.
    assert items == command_items + data_items
    assert [pdv.is_last for pdv in command_items] == [False] * (len(command_items) - 1) + [True]
    assert decode_command(b"".join(bytes(pdv.data) for pdv in command_items)) == command
    if msg.data is None:
        assert data_items == []
    else:
        assert [pdv.is_last for pdv in data_items] == [False] * (len(data_items) - 1) + [True]
        assert b"".join(bytes(pdv.data) for pdv in data_items) == msg.data
    return pdus


STORE_COMMAND: dict[str, object] = {
    "CommandField": C_STORE_RQ,
    "MessageID": 1,
    "AffectedSOPClassUID": CT_IMAGE,
    "AffectedSOPInstanceUID": "1.2.3.4",
    "Priority": 0,
    "CommandDataSetType": DATASET_PRESENT,
}


def test_fragments_respect_every_max_pdu_length() -> None:
    data = bytes(range(256)) * 3 + b"xyz"
    echo = DimseMessage(1, {"CommandField": C_ECHO_RQ, "MessageID": 1})
    for max_pdu in range(7, 400):
        for size in (0, 1, 2, max_pdu - 7, max_pdu - 6, max_pdu - 5, len(data)):
            if size < 0:
                continue
            msg = DimseMessage(5, STORE_COMMAND, data[:size])
            pdus = check_fragments(msg, max_pdu)
            assembler = MessageAssembler()
            assert [m for pdu in pdus for m in assembler.feed(pdu)] == [msg]
        check_fragments(echo, max_pdu)


def test_fragment_sizes_are_maximal() -> None:
    msg = DimseMessage(1, STORE_COMMAND, b"\x00" * 1000)
    data_items = [pdv for pdv in pdvs(list(fragment_message(msg, 106))) if not pdv.is_command]
    assert [len(pdv.data) for pdv in data_items] == [100] * 10


def test_data_fragments_are_views() -> None:
    data = b"\x01" * 1000
    items = [pdv for pdv in pdvs(list(fragment_message(DimseMessage(1, STORE_COMMAND, data), 506)))]
    data_items = [pdv for pdv in items if not pdv.is_command]
    assert len(data_items) == 2
    assert all(isinstance(pdv.data, memoryview) for pdv in data_items)
    assert all(pdv.data.obj is data for pdv in data_items if isinstance(pdv.data, memoryview))


def test_unlimited_max_pdu_length() -> None:
    data = b"\x00" * (DEFAULT_MAX_FRAGMENT * 2 + 10)
    pdus = check_fragments(DimseMessage(1, STORE_COMMAND, data), 0)
    assert [len(pdv.data) for pdv in pdvs(pdus) if not pdv.is_command] == [
        DEFAULT_MAX_FRAGMENT,
        DEFAULT_MAX_FRAGMENT,
        10,
    ]
    small = list(fragment_message(DimseMessage(1, STORE_COMMAND, b"ab"), 0))
    assert len(small) == 2


def test_encoded_pdus_respect_max_pdu_length() -> None:
    from aiodicom.pdu import encode_pdu

    msg = DimseMessage(1, STORE_COMMAND, b"\x02" * 500)
    encoded = [encode_pdu(pdu) for pdu in fragment_message(msg, 64)]
    # The maximum length counts the variable field: everything after the 6-byte PDU header.
    assert max(len(pdu) - 6 for pdu in encoded) == 64


@pytest.mark.parametrize("max_pdu", [1, 5, 6])
def test_max_pdu_length_too_small(max_pdu: int) -> None:
    with pytest.raises(DimseError):
        list(fragment_message(DimseMessage(1, STORE_COMMAND, b"x"), max_pdu))


def test_data_set_type_is_filled_in() -> None:
    without: dict[str, object] = {"CommandField": C_ECHO_RQ, "MessageID": 1}
    echo = pdvs(list(fragment_message(DimseMessage(1, without), 0)))
    assert decode_command(bytes(echo[0].data))["CommandDataSetType"] == NO_DATASET
    store = pdvs(list(fragment_message(DimseMessage(1, without, b"ab"), 0)))
    assert decode_command(bytes(store[0].data))["CommandDataSetType"] == DATASET_PRESENT
    assert "CommandDataSetType" not in without


@pytest.mark.parametrize(
    ("data_set_type", "data"), [(NO_DATASET, b"x"), (DATASET_PRESENT, None), (0x0102, None)]
)
def test_data_set_type_contradicting_data(data_set_type: int, data: bytes | None) -> None:
    msg = DimseMessage(1, {"CommandField": C_ECHO_RQ, "CommandDataSetType": data_set_type}, data)
    with pytest.raises(ValueError):
        list(fragment_message(msg, 0))


def test_empty_data_set_is_one_empty_last_fragment() -> None:
    items = pdvs(list(fragment_message(DimseMessage(1, STORE_COMMAND, b""), 100)))
    data_items = [pdv for pdv in items if not pdv.is_command]
    assert [(pdv.is_last, bytes(pdv.data)) for pdv in data_items] == [(True, b"")]


# --- reassembly ---------------------------------------------------------------------------------


def pdv(ctx: int, command: bool, last: bool, data: bytes) -> PDataTF:
    return PDataTF((PresentationDataValue(ctx, command, last, data),))


ECHO_RQ = encode_command(
    {"CommandField": C_ECHO_RQ, "MessageID": 1, "CommandDataSetType": NO_DATASET}
)
FIND_RQ = encode_command(
    {
        "CommandField": C_FIND_RQ,
        "MessageID": 2,
        "AffectedSOPClassUID": STUDY_ROOT_FIND,
        "Priority": 0,
        "CommandDataSetType": DATASET_PRESENT,
    }
)


def test_assembles_a_sequence_of_messages() -> None:
    assembler = MessageAssembler()
    assert not assembler.in_progress
    assert assembler.feed(pdv(1, True, False, ECHO_RQ[:10])) == []
    assert assembler.in_progress
    [echo] = assembler.feed(pdv(1, True, True, ECHO_RQ[10:]))
    assert not assembler.in_progress
    assert echo == DimseMessage(1, decode_command(ECHO_RQ), None)

    assert assembler.feed(pdv(3, True, True, FIND_RQ)) == []
    assert assembler.in_progress
    assert assembler.feed(pdv(3, False, False, b"ab")) == []
    assert assembler.feed(pdv(3, False, False, b"cd")) == []
    [find] = assembler.feed(pdv(3, False, True, b"ef"))
    assert find.context_id == 3
    assert find.data == b"abcdef"
    assert find.command_field == C_FIND_RQ


def test_data_set_outlives_the_reused_receive_buffer() -> None:
    """PDV values are views of a buffer the transport reuses: the message keeps a copy."""
    assembler = MessageAssembler()
    assembler.feed(pdv(1, True, True, FIND_RQ))
    buffer = bytearray(b"0123456789")
    assembler.feed(PDataTF((PresentationDataValue(1, False, False, memoryview(buffer)[2:6]),)))
    buffer[:] = b"xxxxxxxxxx"
    [msg] = assembler.feed(
        PDataTF((PresentationDataValue(1, False, True, memoryview(buffer)[0:2]),))
    )
    buffer[:] = b"yyyyyyyyyy"
    assert msg.data == b"2345xx"
    assert memoryview(msg.data).readonly


def test_single_fragment_data_set_is_its_own_bytes() -> None:
    """A data set in one fragment (a C-FIND identifier) becomes immutable bytes in one copy:
    what the data set decoder needs, so it does not copy again."""
    assembler = MessageAssembler()
    assembler.feed(pdv(1, True, True, FIND_RQ))
    buffer = bytearray(b"0123456789")
    [msg] = assembler.feed(
        PDataTF((PresentationDataValue(1, False, True, memoryview(buffer)[2:6]),))
    )
    buffer[:] = bytes(10)
    assert type(msg.data) is bytes and msg.data == b"2345"


def test_command_outlives_the_reused_receive_buffer() -> None:
    assembler = MessageAssembler()
    buffer = bytearray(ECHO_RQ)
    first = PresentationDataValue(1, True, False, memoryview(buffer)[:10])
    assert assembler.feed(PDataTF((first,))) == []
    buffer[:10] = bytes(10)
    [echo] = assembler.feed(PDataTF((PresentationDataValue(1, True, True, ECHO_RQ[10:]),)))
    assert echo == DimseMessage(1, decode_command(ECHO_RQ), None)


class _RecordingWriter:
    def __init__(self) -> None:
        self.fragments: list[bytes] = []
        self.discarded = False

    def write(self, fragment: memoryview) -> None:
        self.fragments.append(bytes(fragment))

    def close(self) -> bytes:
        return b"".join(self.fragments)

    def discard(self) -> None:
        self.discarded = True


def test_open_data_chooses_the_writer_per_message() -> None:
    writers: list[_RecordingWriter] = []
    seen: list[tuple[int, int]] = []

    def open_data(context_id: int, command: dict[str, object]) -> _RecordingWriter | None:
        seen.append((context_id, int(command["CommandField"])))  # type: ignore[call-overload]
        if len(writers) == 1:
            return None  # the second message stays in memory
        writers.append(_RecordingWriter())
        return writers[-1]

    assembler = MessageAssembler(open_data)
    assembler.feed(pdv(3, True, True, FIND_RQ))
    assembler.feed(pdv(3, False, False, b"ab"))
    [first] = assembler.feed(pdv(3, False, True, b"cd"))
    assert first.data == b"abcd" and first.writer is writers[0]
    assert writers[0].fragments == [b"ab", b"cd"]
    assembler.feed(pdv(3, True, True, FIND_RQ))
    [second] = assembler.feed(pdv(3, False, True, b"ef"))
    assert second.data == b"ef" and second.writer is None
    assert seen == [(3, C_FIND_RQ), (3, C_FIND_RQ)]


class _FlushingWriter(_RecordingWriter):
    """Keeps the views it is given until flush(), as a file writer does."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[memoryview] = []
        self.flushes = 0

    def write(self, fragment: memoryview) -> None:
        self.kept.append(fragment)

    def flush(self) -> None:
        self.flushes += 1
        self.fragments.extend(bytes(view) for view in self.kept)
        self.kept = []

    def close(self) -> bytes:
        self.flush()
        return super().close()


def test_a_writer_with_flush_keeps_the_values_of_a_read_until_its_end() -> None:
    writer = _FlushingWriter()
    assembler = MessageAssembler(lambda _c, _cmd: writer)
    assembler.feed(pdv(3, True, True, FIND_RQ))
    writer.flushes = 0  # feed() ends with one (nothing kept yet)
    receive_buffer = bytearray(b"abcdef")
    view = memoryview(receive_buffer)
    # What the state machine hands over for the values of one read, then the end of the read.
    assert assembler.feed_value(3, 0, view[0:2]) is None
    assert assembler.feed_value(3, 0, view[2:4]) is None
    assert writer.flushes == 0 and writer.fragments == []
    assembler.flush()
    assert writer.fragments == [b"ab", b"cd"]
    receive_buffer[:4] = b"XXXX"  # read into again: what was written is not touched
    [message] = assembler.feed(PDataTF((PresentationDataValue(3, False, True, view[4:6]),)))
    assert message.data == b"abcdef" and message.writer is writer
    assembler.flush()  # after the message: its writer is no longer the assembler's
    assert writer.flushes == 2  # the read's end, then close(); feed() has no writer left


def test_a_pdu_with_several_data_values_is_flushed_once() -> None:
    writer = _FlushingWriter()
    assembler = MessageAssembler(lambda _c, _cmd: writer)
    assembler.feed(pdv(3, True, True, FIND_RQ))
    writer.flushes = 0
    assembler.feed(PDataTF(tuple(
        PresentationDataValue(3, False, False, part) for part in (b"ab", b"cd", b"ef")
    )))
    assert writer.flushes == 1 and writer.fragments == [b"ab", b"cd", b"ef"]


def test_abandon_discards_the_data_set_in_progress() -> None:
    writer = _RecordingWriter()
    assembler = MessageAssembler(lambda _c, _cmd: writer)
    assembler.feed(pdv(3, True, True, FIND_RQ))
    assembler.feed(pdv(3, False, False, b"ab"))
    assembler.abandon()
    assert writer.discarded
    assert not assembler.in_progress


def test_several_messages_in_one_pdu() -> None:
    pdu = PDataTF(
        (
            PresentationDataValue(1, True, True, ECHO_RQ),
            PresentationDataValue(3, True, True, FIND_RQ),
            PresentationDataValue(3, False, True, b"id"),
            PresentationDataValue(5, True, True, ECHO_RQ),
        )
    )
    messages = MessageAssembler().feed(pdu)
    assert [(m.context_id, m.data) for m in messages] == [(1, None), (3, b"id"), (5, None)]


def test_data_before_command() -> None:
    with pytest.raises(DimseError, match="before any command"):
        MessageAssembler().feed(pdv(1, False, True, b"data"))


def test_data_after_command_without_data_set() -> None:
    assembler = MessageAssembler()
    assembler.feed(pdv(1, True, True, ECHO_RQ))
    with pytest.raises(DimseError, match="C-ECHO-RQ said it has no data set"):
        assembler.feed(pdv(1, False, True, b"data"))


def test_context_change_within_command() -> None:
    assembler = MessageAssembler()
    assembler.feed(pdv(1, True, False, FIND_RQ[:20]))
    with pytest.raises(DimseError, match="presentation context 3"):
        assembler.feed(pdv(3, True, True, FIND_RQ[20:]))


def test_context_change_between_command_and_data() -> None:
    assembler = MessageAssembler()
    assembler.feed(pdv(1, True, True, FIND_RQ))
    with pytest.raises(DimseError, match="middle of a message"):
        assembler.feed(pdv(3, False, True, b"data"))


def test_command_while_data_expected() -> None:
    assembler = MessageAssembler()
    assembler.feed(pdv(1, True, True, FIND_RQ))
    assembler.feed(pdv(1, False, False, b"da"))
    with pytest.raises(DimseError, match="command fragment"):
        assembler.feed(pdv(1, True, True, ECHO_RQ))


def test_malformed_command_in_assembler() -> None:
    with pytest.raises(CommandDecodeError):
        MessageAssembler().feed(pdv(1, True, True, ECHO_RQ[:-1]))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"MessageID": 1, "CommandDataSetType": NO_DATASET}, "Command Field"),
        ({"CommandField": C_ECHO_RQ, "MessageID": 1}, "Command Data Set Type"),
    ],
)
def test_command_missing_required_elements(fields: dict[str, object], words: str) -> None:
    with pytest.raises(DimseError, match=words):
        MessageAssembler().feed(pdv(1, True, True, encode_command(fields)))


# --- data sets ------------------------------------------------------------------------------------


def sample_dataset() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Müller^Jürgen=山田^太郎"
    ds.PatientID = "ID 1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.NumberOfStudyRelatedInstances = 12
    ds.Rows = 256
    item = Dataset()
    item.CodeValue = "CT"
    item.CodeMeaning = "Computed Tomography"
    ds.ProcedureCodeSequence = Sequence([item, item])
    return ds


TRANSFER_SYNTAXES = [
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.3.999.1",  # a private syntax nobody knows
]


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES)
def test_dataset_round_trip(ts: str) -> None:
    ds = sample_dataset()
    data = encode_dataset(ds, ts)
    assert len(data) % 2 == 0
    for received in (data, memoryview(data), bytearray(data)):
        decoded = decode_dataset(received, ts)
        assert decoded.PatientName == ds.PatientName
        assert decoded.NumberOfStudyRelatedInstances == 12
        assert decoded.Rows == 256
        assert decoded.ProcedureCodeSequence[1].CodeMeaning == "Computed Tomography"
        assert encode_dataset(decoded, ts) == data


@pytest.mark.parametrize(
    ("ts", "implicit", "little", "deflated"),
    [
        (IMPLICIT_VR_LITTLE_ENDIAN, True, True, False),
        (EXPLICIT_VR_LITTLE_ENDIAN, False, True, False),
        (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, False, True, True),
        (EXPLICIT_VR_BIG_ENDIAN, False, False, False),
    ],
)
def test_dataset_matches_pynetdicom(ts: str, implicit: bool, little: bool, deflated: bool) -> None:
    from pynetdicom import dsutils

    ds = sample_dataset()
    ours = encode_dataset(ds, ts)
    if not deflated:
        assert ours == dsutils.encode(ds, implicit, little)
    theirs = dsutils.decode(io.BytesIO(ours), implicit, little, deflated)
    assert theirs.PatientName == ds.PatientName
    assert decode_dataset(pynetdicom_encode(ds, implicit, little, deflated), ts).Rows == 256


def test_deflated_is_deflated() -> None:
    ds = sample_dataset()
    ds.PatientComments = "x" * 5000
    deflated = encode_dataset(ds, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    plain = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    assert len(deflated) < len(plain) // 10
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(deflated) == plain


def test_encapsulated_pixel_data() -> None:
    ts = "1.2.840.10008.1.2.4.50"
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.PixelData = encapsulate([b"\xff\xd8frame1\xff\xd9", b"\xff\xd8frame2\xff\xd9"])
    ds["PixelData"].VR = "OB"
    data = encode_dataset(ds, ts)
    # Pixel Data in an encapsulated syntax has undefined length.
    assert b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" in data
    assert decode_dataset(data, ts).PixelData == ds.PixelData


def test_native_pixel_data_in_encapsulated_syntax_fails() -> None:
    ds = Dataset()
    ds.PixelData = b"\x00\x01" * 8
    ds["PixelData"].VR = "OW"
    with pytest.raises(DatasetEncodeError):
        encode_dataset(ds, "1.2.840.10008.1.2.4.50")


def test_file_meta_elements_are_left_out() -> None:
    ds = sample_dataset()
    ds.add_new(0x00020010, "UI", EXPLICIT_VR_LITTLE_ENDIAN)
    data = encode_dataset(ds, IMPLICIT_VR_LITTLE_ENDIAN)
    assert 0x00020010 not in decode_dataset(data, IMPLICIT_VR_LITTLE_ENDIAN)
    assert 0x00020010 in ds  # the caller's data set is untouched
    del ds[0x00020010]
    assert data == encode_dataset(ds, IMPLICIT_VR_LITTLE_ENDIAN)


def test_empty_dataset() -> None:
    assert encode_dataset(Dataset(), EXPLICIT_VR_LITTLE_ENDIAN) == b""
    assert len(decode_dataset(b"", EXPLICIT_VR_LITTLE_ENDIAN)) == 0


@pytest.mark.parametrize(
    "ts", [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN]
)
@pytest.mark.filterwarnings("ignore:Unknown encoding")
def test_every_truncation_of_a_dataset_fails_or_stops_at_a_boundary(ts: str) -> None:
    data = encode_dataset(sample_dataset(), ts)
    full = decode_dataset(data, ts)
    boundaries = {0}
    for tag in list(full.keys()):
        raw = full.get_item(tag)
        assert isinstance(raw, RawDataElement)
        boundaries.add(raw.value_tell + raw.length)
    assert len(data) in boundaries
    for cut in range(len(data)):
        if cut in boundaries:
            decode_dataset(data[:cut], ts)
        else:
            with pytest.raises(DatasetDecodeError) as info:
                decode_dataset(data[:cut], ts)
            assert isinstance(info.value, DicomError)


def test_broken_deflate_stream() -> None:
    data = encode_dataset(sample_dataset(), DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError):
        decode_dataset(data[: len(data) // 2], DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(DatasetDecodeError):
        decode_dataset(b"\x07garbage", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)


def test_transfer_syntax_helpers() -> None:
    assert transfer_syntax_name(IMPLICIT_VR_LITTLE_ENDIAN) == "Implicit VR Little Endian"
    assert transfer_syntax_name("1.2.840.10008.1.2.4.50") == "JPEG Baseline (Process 1)"
    assert transfer_syntax_name("1.2.3.999") == "1.2.3.999"
    assert is_deflated(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    assert is_deflated("1.2.840.10008.1.2.4.95")
    assert not is_deflated(EXPLICIT_VR_LITTLE_ENDIAN)
    assert is_encapsulated("1.2.840.10008.1.2.4.50")
    assert is_encapsulated("1.2.840.10008.1.2.5")  # RLE Lossless
    assert not is_encapsulated(EXPLICIT_VR_BIG_ENDIAN)
    assert not is_encapsulated("1.2.840.10008.1.2.4.94")
    assert not is_encapsulated("1.2.3.999")
    assert not is_encapsulated("1.2.840.10008.5.1.4.1.2.2.1")  # not a transfer syntax


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.3", ""])
@pytest.mark.parametrize("sop_instance", ["1.2.826.0.1.3680043.8.498.1.1.12", "1.2", "1.2.é"])
@pytest.mark.parametrize(("message_id", "status"), [(1, 0x0000), (65535, 0xA700), (7, 0xC000)])
def test_store_response_encoding_is_the_generic_encoding(
    sop_class: str, sop_instance: str, message_id: int, status: int
) -> None:
    generic = encode_command({
        "CommandField": C_STORE_RSP,
        "MessageIDBeingRespondedTo": message_id,
        "AffectedSOPClassUID": sop_class,
        "AffectedSOPInstanceUID": sop_instance,
        "CommandDataSetType": NO_DATASET,
        "Status": status,
    })
    assert encode_store_response(message_id, sop_class, sop_instance, status) == generic


def test_store_response_encoding_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_store_response(65536, "1.2", "1.2.3", 0)


def test_an_encoded_command_is_sent_as_it_is() -> None:
    command: dict[str, object] = {"CommandField": C_STORE_RSP, "MessageIDBeingRespondedTo": 3}
    encoded = encode_store_response(3, "1.2", "1.2.3", 0)
    [pdu] = list(fragment_message(DimseMessage(1, command, None, encoded_command=encoded), 0))
    assert bytes(pdu.pdvs[0].data) == encoded


@pytest.mark.parametrize("max_pdu_length", [0, 16_384, 131_072, 160, 8])
@pytest.mark.parametrize("with_data", [False, True])
def test_a_short_message_is_the_one_write_encode_message_makes(
    max_pdu_length: int, with_data: bool
) -> None:
    """The storage SCP's shortcut for its responses sends what the general encoder sends, and
    declines what does not fit one PDU or carries a data set."""
    encoded = encode_store_response(3, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 0)
    message = DimseMessage(
        1, {"CommandField": C_STORE_RSP}, b"\0\0" if with_data else None, encoded_command=encoded
    )
    short = dimse.encode_short_message(message, max_pdu_length)
    fits = max_pdu_length == 0 or len(encoded) + dimse.PDV_OVERHEAD <= max_pdu_length
    if with_data or not fits:
        assert short is None
    else:
        assert short == b"".join(dimse.encode_message(message, max_pdu_length))
    unencoded = DimseMessage(1, {"CommandField": C_STORE_RSP}, None)
    assert dimse.encode_short_message(unencoded, 0) is None


@pytest.mark.parametrize("data_size", [None, 0, 10, 40_000, 300_000])
@pytest.mark.parametrize("max_pdu_length", [0, 16_384, 131_072, 8])
@pytest.mark.parametrize("write_size", [1, 100, dimse.WRITE_SIZE])
def test_encode_message_is_fragment_message_encoded_and_grouped_into_writes(
    data_size: int | None, max_pdu_length: int, write_size: int
) -> None:
    """The writes hold exactly the PDUs fragment_message makes, whole, in order; a message that
    fits in one write comes as one (nothing can come between its command and its data set)."""
    from aiodicom.pdu import encode_pdu

    data = None if data_size is None else bytes(range(256)) * (data_size // 256) + b"x" * (
        data_size % 256
    )
    message = DimseMessage(3, {
        "CommandField": C_STORE_RQ, "MessageID": 5, "AffectedSOPClassUID": "1.2",
        "AffectedSOPInstanceUID": "1.2.3", "Priority": 0,
    }, data)
    expected = b"".join(encode_pdu(p) for p in fragment_message(message, max_pdu_length))
    writes = list(dimse.encode_message(message, max_pdu_length, write_size))
    assert b"".join(writes) == expected
    largest_pdu = (max_pdu_length or dimse.DEFAULT_MAX_FRAGMENT + dimse.PDV_OVERHEAD) + 6
    assert all(len(w) <= max(write_size, largest_pdu) for w in writes)
    if len(expected) <= write_size:
        assert len(writes) == 1
    # Each write starts at a PDU boundary: a P-DATA-TF header whose length fits in the write.
    for write in writes:
        position = 0
        while position < len(write):
            assert write[position] == 0x04
            position += 6 + struct.unpack_from(">I", write, position + 2)[0]
        assert position == len(write)
