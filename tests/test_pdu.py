"""Tests of the PDU codec (aiodicom.pdu): round trips, byte layouts, malformed input, pynetdicom."""

from __future__ import annotations

import array
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.pdu import (
    APPLICATION_CONTEXT_NAME,
    PDU,
    AAbort,
    AReleaseRP,
    AReleaseRQ,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsyncOperationsWindow,
    PDataTF,
    PDUDecodeError,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UnknownSubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    decode_pdu,
    encode_pdata,
    encode_pdu,
    read_pdu_header,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STORAGE_SERVICE = "1.2.840.10008.4.2"

# --- strategies -----------------------------------------------------------------------------------

uids = st.text(alphabet="0123456789.", min_size=1, max_size=64)
# Leading/trailing spaces are not significant and are stripped on decode, so valid values
# have none.
short_texts = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16
).map(str.strip)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
small_binary = st.binary(max_size=40)

async_windows = st.builds(AsyncOperationsWindow, u16, u16)
role_selections = st.builds(RoleSelection, uids, st.booleans(), st.booleans())
extended_negotiations = st.builds(SOPClassExtendedNegotiation, uids, small_binary)
common_extended_negotiations = st.builds(
    SOPClassCommonExtendedNegotiation,
    uids,
    uids,
    st.lists(uids, max_size=4).map(tuple),
)
user_identities_rq = st.builds(UserIdentityRQ, u8, st.booleans(), small_binary, small_binary)
user_identities_ac = st.builds(UserIdentityAC, small_binary)
unknown_sub_items = st.builds(
    UnknownSubItem,
    st.integers(0, 0xFF).filter(lambda t: not 0x51 <= t <= 0x59),
    small_binary,
)


def _small_tuples(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[tuple[object, ...]]:
    return st.lists(strategy, max_size=3).map(tuple)


user_informations = st.builds(
    UserInformation,
    max_pdu_length=st.none() | st.integers(0, 0xFFFFFFFF),
    implementation_class_uid=st.none() | uids,
    implementation_version_name=st.none() | short_texts,
    async_operations_window=st.none() | async_windows,
    role_selections=_small_tuples(role_selections),
    sop_class_extended=_small_tuples(extended_negotiations),
    sop_class_common_extended=_small_tuples(common_extended_negotiations),
    user_identity_rq=st.none() | user_identities_rq,
    user_identity_ac=st.none() | user_identities_ac,
    unknown_items=_small_tuples(unknown_sub_items),
)
contexts_rq = st.builds(
    PresentationContextRQ, u8, uids, st.lists(uids, min_size=1, max_size=4).map(tuple)
)
contexts_ac = st.one_of(
    st.builds(PresentationContextAC, u8, st.just(0), uids),
    st.builds(PresentationContextAC, u8, st.integers(1, 0xFF), st.none() | uids),
)
associate_rqs = st.builds(
    AssociateRQ,
    called_ae_title=short_texts,
    calling_ae_title=short_texts,
    presentation_contexts=st.lists(contexts_rq, max_size=5).map(tuple),
    user_information=user_informations,
    application_context_name=uids,
    protocol_version=u16,
)
associate_acs = st.builds(
    AssociateAC,
    called_ae_title=short_texts,
    calling_ae_title=short_texts,
    presentation_contexts=st.lists(contexts_ac, max_size=5).map(tuple),
    user_information=user_informations,
    application_context_name=uids,
    protocol_version=u16,
)
associate_rjs = st.builds(AssociateRJ, u8, u8, u8)
aborts = st.builds(AAbort, u8, u8)
pdvs = st.builds(PresentationDataValue, u8, st.booleans(), st.booleans(), st.binary(max_size=200))
pdatas = st.builds(PDataTF, st.lists(pdvs, min_size=1, max_size=4).map(tuple))
all_pdus: st.SearchStrategy[PDU] = st.one_of(
    associate_rqs,
    associate_acs,
    associate_rjs,
    pdatas,
    st.just(AReleaseRQ()),
    st.just(AReleaseRP()),
    aborts,
)


def _only_decode_errors(data: bytes) -> PDU | None:
    """Decode ``data``: a PDU or PDUDecodeError (pointing inside the data) are both fine, any
    other exception fails the test."""
    try:
        return decode_pdu(data)
    except PDUDecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        assert exc.reason
        return None


# --- round trips ----------------------------------------------------------------------------------


@ROUND_TRIP
@given(associate_rqs)
def test_associate_rq_round_trip(pdu: AssociateRQ) -> None:
    assert decode_pdu(encode_pdu(pdu)) == pdu


@ROUND_TRIP
@given(associate_acs)
def test_associate_ac_round_trip(pdu: AssociateAC) -> None:
    assert decode_pdu(encode_pdu(pdu)) == pdu


@ROUND_TRIP
@given(st.one_of(associate_rjs, aborts, st.just(AReleaseRQ()), st.just(AReleaseRP())))
def test_fixed_length_pdus_round_trip(pdu: PDU) -> None:
    encoded = encode_pdu(pdu)
    assert len(encoded) == 10
    assert decode_pdu(encoded) == pdu


@ROUND_TRIP
@given(pdatas)
def test_pdata_round_trip(pdu: PDataTF) -> None:
    encoded = encode_pdu(pdu)
    assert encoded == encode_pdata(pdu.pdvs)
    decoded = decode_pdu(encoded)
    assert decoded == pdu


@pytest.mark.parametrize(
    ("field", "strategy"),
    [
        ("max_pdu_length", st.integers(0, 0xFFFFFFFF)),
        ("implementation_class_uid", uids),
        ("implementation_version_name", short_texts),
        ("async_operations_window", async_windows),
        ("role_selections", st.lists(role_selections, min_size=1, max_size=3).map(tuple)),
        ("sop_class_extended", st.lists(extended_negotiations, min_size=1, max_size=3).map(tuple)),
        (
            "sop_class_common_extended",
            st.lists(common_extended_negotiations, min_size=1, max_size=3).map(tuple),
        ),
        ("user_identity_rq", user_identities_rq),
        ("user_identity_ac", user_identities_ac),
        ("unknown_items", st.lists(unknown_sub_items, min_size=1, max_size=3).map(tuple)),
    ],
)
def test_each_user_information_sub_item_round_trips(
    field: str, strategy: st.SearchStrategy[object]
) -> None:
    # One sub-item kind at a time, so a failure names the sub-item at fault.
    @settings(max_examples=50, deadline=None)
    @given(value=strategy, ac=st.booleans())
    def check(value: object, ac: bool) -> None:
        info = UserInformation(**{field: value})  # type: ignore[arg-type]
        pdu: AssociateRQ | AssociateAC
        if ac:
            pdu = AssociateAC("A", "B", (PresentationContextAC(1, 0, IMPLICIT_LE),), info)
        else:
            pdu = AssociateRQ(
                "A", "B", (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),), info
            )
        decoded = decode_pdu(encode_pdu(pdu))
        assert isinstance(decoded, (AssociateRQ, AssociateAC))
        assert getattr(decoded.user_information, field) == value
        assert decoded == pdu

    check()


def test_pdata_values_are_views_of_the_input() -> None:
    payload = bytes(range(256)) * 4096
    encoded = encode_pdu(
        PDataTF(
            (
                PresentationDataValue(3, True, True, b"\x01\x02"),
                PresentationDataValue(3, False, False, payload),
            )
        )
    )
    decoded = decode_pdu(encoded)
    assert isinstance(decoded, PDataTF)
    command, data = decoded.pdvs
    assert isinstance(data.data, memoryview)
    assert data.data.obj is encoded  # a view into the received bytes, not a copy
    assert (command.is_command, command.is_last) == (True, True)
    assert (data.is_command, data.is_last) == (False, False)
    assert data.data == payload


def test_encode_pdata_accepts_memoryviews_of_any_format() -> None:
    words = array.array("H", [1, 2, 3])
    encoded = encode_pdata([PresentationDataValue(1, False, True, memoryview(words))])
    assert encoded == (bytes.fromhex("04 00 0000000c 00000008 01 02") + words.tobytes())
    # and a slice of a received PDU can be sent on as it is
    decoded = decode_pdu(encoded)
    assert isinstance(decoded, PDataTF)
    assert encode_pdu(decoded) == encoded


def test_decode_accepts_bytearray_and_memoryview() -> None:
    encoded = encode_pdu(AAbort(2, 6))
    assert decode_pdu(bytearray(encoded)) == AAbort(2, 6)
    assert decode_pdu(memoryview(encoded)) == AAbort(2, 6)


# --- hand-checked layouts ------------------------------------------------------------------------


def test_release_rq_layout() -> None:
    assert encode_pdu(AReleaseRQ()) == bytes.fromhex("05 00 00000004 00000000")
    assert decode_pdu(bytes.fromhex("05 00 00000004 00000000")) == AReleaseRQ()


def test_release_rp_layout() -> None:
    assert encode_pdu(AReleaseRP()) == bytes.fromhex("06 00 00000004 00000000")


def test_abort_layout() -> None:
    assert encode_pdu(AAbort(source=2, reason=6)) == bytes.fromhex("07 00 00000004 00 00 02 06")
    # reserved bytes are not tested on receipt
    assert decode_pdu(bytes.fromhex("07 ff 00000004 ff ff 00 00")) == AAbort(0, 0)


def test_associate_rj_layout() -> None:
    rj = AssociateRJ(result=1, source=1, reason=7)
    assert encode_pdu(rj) == bytes.fromhex("03 00 00000004 00 01 01 07")
    assert decode_pdu(bytes.fromhex("03 00 00000004 00 02 03 01")) == AssociateRJ(2, 3, 1)


def test_pdata_layout() -> None:
    pdu = PDataTF((PresentationDataValue(1, True, True, b"\xaa\xbb"),))
    assert encode_pdu(pdu) == bytes.fromhex("04 00 00000008 00000004 01 03 aabb")
    pdu = PDataTF((PresentationDataValue(5, False, True, b""),))
    assert encode_pdu(pdu) == bytes.fromhex("04 00 00000006 00000002 05 02")


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _associate(pdu_type: int, called: bytes, calling: bytes, items: bytes) -> bytes:
    body = b"\x00\x01\x00\x00" + called.ljust(16) + calling.ljust(16) + bytes(32) + items
    return struct.pack(">BxI", pdu_type, len(body)) + body


def test_associate_rq_layout() -> None:
    rq = AssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="ECHOSCU",
        presentation_contexts=(PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE, EXPLICIT_LE)),),
        user_information=UserInformation(
            max_pdu_length=16384,
            implementation_class_uid="1.2.3",
            implementation_version_name="AIODICOM",
            role_selections=(RoleSelection("1.2", scu_role=True, scp_role=False),),
            sop_class_common_extended=(SOPClassCommonExtendedNegotiation("1.2", "1.3", ("1.4",)),),
        ),
    )
    expected = _associate(
        0x01,
        b"ANY-SCP",
        b"ECHOSCU",
        _item(0x10, APPLICATION_CONTEXT_NAME.encode())
        + _item(
            0x20,
            bytes.fromhex("01 00 00 00")
            + _item(0x30, VERIFICATION.encode())
            + _item(0x40, IMPLICIT_LE.encode())
            + _item(0x40, EXPLICIT_LE.encode()),
        )
        + _item(
            0x50,
            bytes.fromhex("51 00 0004 00004000")
            + _item(0x52, b"1.2.3")
            + bytes.fromhex("54 00 0007 0003")
            + b"1.2"
            + b"\x01\x00"
            + _item(0x55, b"AIODICOM")
            # sub-item version 0, then SOP class, service class, related list (one UID)
            + bytes.fromhex("57 00 0011 0003")
            + b"1.2"
            + bytes.fromhex("0003")
            + b"1.3"
            + bytes.fromhex("0005 0003")
            + b"1.4",
        ),
    )
    assert encode_pdu(rq) == expected
    assert decode_pdu(expected) == rq


def test_user_identity_and_extended_layouts() -> None:
    info = UserInformation(
        async_operations_window=AsyncOperationsWindow(0, 1),
        sop_class_extended=(SOPClassExtendedNegotiation("1.2", b"\x01\x00\x01"),),
        user_identity_rq=UserIdentityRQ(2, True, b"user", b"pw"),
        user_identity_ac=UserIdentityAC(b"ok"),
    )
    encoded = encode_pdu(AssociateRQ("A", "B", (), info))
    user_item = encoded[encoded.index(b"\x50\x00") :]
    assert user_item[4:] == (
        bytes.fromhex("53 00 0004 0000 0001")
        + bytes.fromhex("56 00 0008 0003")
        + b"1.2"
        + b"\x01\x00\x01"
        + bytes.fromhex("58 00 000c 02 01 0004")
        + b"user"
        + bytes.fromhex("0002")
        + b"pw"
        + bytes.fromhex("59 00 0004 0002")
        + b"ok"
    )


def test_associate_ac_layout_for_rejected_context() -> None:
    ac = AssociateAC("ANY-SCP", "ECHOSCU", (PresentationContextAC(3, 3),))
    encoded = encode_pdu(ac)
    # a rejected context still carries its (empty) transfer syntax sub-item
    assert _item(0x21, bytes.fromhex("03 00 03 00") + _item(0x40, b"")) in encoded
    assert decode_pdu(encoded) == ac


# --- decoding details -----------------------------------------------------------------------------


def _minimal_rq_items() -> bytes:
    return _item(0x10, APPLICATION_CONTEXT_NAME.encode()) + _item(
        0x20,
        b"\x01\x00\x00\x00"
        + _item(0x30, VERIFICATION.encode())
        + _item(0x40, b"1.2.840.10008.1.2\x00"),
    )


def test_ae_titles_and_uids_are_stripped() -> None:
    data = _associate(0x01, b"  CALLED", b"CALLING", _minimal_rq_items())
    rq = decode_pdu(data)
    assert isinstance(rq, AssociateRQ)
    assert (rq.called_ae_title, rq.calling_ae_title) == ("CALLED", "CALLING")
    assert rq.presentation_contexts[0].transfer_syntaxes == (IMPLICIT_LE,)
    assert rq.user_information == UserInformation()  # the user information item is absent


def test_unknown_items_in_variable_part_are_skipped() -> None:
    items = _item(0x7F, b"whatever") + _minimal_rq_items() + _item(0x21, b"\x01\x00\x00\x00")
    rq = decode_pdu(_associate(0x01, b"A", b"B", items))
    assert isinstance(rq, AssociateRQ)
    assert len(rq.presentation_contexts) == 1


def test_unknown_user_sub_items_are_kept_and_re_encoded() -> None:
    user = _item(0x51, b"\x00\x00\x40\x00") + _item(0xE0, b"\x01\x02\x03") + _item(0x5A, b"")
    data = _associate(0x01, b"A", b"B", _minimal_rq_items() + _item(0x50, user))
    rq = decode_pdu(data)
    assert isinstance(rq, AssociateRQ)
    assert rq.user_information.unknown_items == (
        UnknownSubItem(0xE0, b"\x01\x02\x03"),
        UnknownSubItem(0x5A, b""),
    )
    encoded = encode_pdu(rq)
    assert _item(0xE0, b"\x01\x02\x03") in encoded
    assert decode_pdu(encoded) == rq


def test_rejected_context_transfer_syntax_is_not_tested() -> None:
    items = (
        _item(0x10, APPLICATION_CONTEXT_NAME.encode())
        + _item(0x21, b"\x01\x00\x03\x00")  # no transfer syntax sub-item at all
        + _item(0x21, b"\x03\x00\x04\x00" + _item(0x40, b""))
        + _item(0x21, b"\x05\x00\x01\x00" + _item(0x40, b"\xff\xfe"))
        + _item(0x21, b"\x07\x00\x02\x00" + _item(0x40, IMPLICIT_LE.encode()))
        + _item(0x21, b"\x09\x00\x00\x00" + _item(0x40, EXPLICIT_LE.encode()))
    )
    ac = decode_pdu(_associate(0x02, b"\xff\x00", b"", items))
    assert isinstance(ac, AssociateAC)
    assert ac.presentation_contexts == (
        PresentationContextAC(1, 3, None),
        PresentationContextAC(3, 4, None),
        PresentationContextAC(5, 1, None),
        PresentationContextAC(7, 2, IMPLICIT_LE),
        PresentationContextAC(9, 0, EXPLICIT_LE),
    )


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"\x01\x00\x00", "PDU header needs 6 bytes, got 3", 3),
        (bytes.fromhex("08 00 00000004 00000000"), "unknown PDU type 0x08", 0),
        (bytes.fromhex("05 00 00000004 00000000 00"), "1 trailing byte(s)", 10),
        (bytes.fromhex("05 00 00000005 00000000"), "length 5 runs past end of data", 2),
        (bytes.fromhex("05 00 00000002 0000"), "A-RELEASE-RQ PDU length is 2, expected 4", 2),
        (bytes.fromhex("04 00 00000000"), "no presentation data value item", 2),
        (bytes.fromhex("04 00 00000006 00000001 01 00"), "too short for its context ID", 6),
        (
            bytes.fromhex("04 00 00000008 00000005 01 03 aabb"),
            "presentation data value item length 5 runs past end of P-DATA-TF PDU",
            6,
        ),
        (bytes.fromhex("04 00 00000003 000000"), "too few for a presentation data value", 6),
        (bytes.fromhex("01 00 00000004 00010000"), "shorter than its 68-byte fixed part", 2),
    ],
)
def test_malformed_pdus(data: bytes, reason: str, offset: int) -> None:
    with pytest.raises(PDUDecodeError) as info:
        decode_pdu(data)
    assert reason in info.value.reason
    assert info.value.offset == offset
    assert f"(at offset {offset})" in str(info.value)


def test_sub_item_running_past_its_item_is_reported_with_offset() -> None:
    context = b"\x01\x00\x00\x00" + struct.pack(">BxH", 0x30, 300) + b"1.2"
    data = _associate(0x01, b"A", b"B", _item(0x10, b"1.2") + _item(0x20, context))
    with pytest.raises(PDUDecodeError) as info:
        decode_pdu(data)
    assert info.value.reason == (
        "abstract syntax sub-item length 300 runs past end of presentation context item"
    )
    # header 6, fixed part 68, application context item 7, context item header 4 + fixed 4,
    # then the sub-item's length field two bytes in
    assert info.value.offset == 6 + 68 + 7 + 8 + 2


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        (b"", "has no application context item"),
        (_item(0x10, b"1") + _item(0x10, b"1"), "more than one application context item"),
        (_item(0x10, b"1") + _item(0x20, b"\x01\x00"), "shorter than its 4-byte fixed part"),
        (
            _item(0x10, b"1") + _item(0x20, b"\x01\x00\x00\x00" + _item(0x40, b"1")),
            "presentation context 1 has no abstract syntax sub-item",
        ),
        (
            _item(0x10, b"1") + _item(0x20, b"\x01\x00\x00\x00" + _item(0x30, b"1")),
            "presentation context 1 has no transfer syntax sub-item",
        ),
        (_item(0x10, b"1.2\xe9"), "application context name is not ASCII (byte 0xE9)"),
        (_item(0x10, b"1") + b"\x50\x00", "too few for an item header"),
        (
            _item(0x10, b"1") + _item(0x50, _item(0x51, b"\x00")),
            "maximum length sub-item length is 1",
        ),
        (
            _item(0x10, b"1") + _item(0x50, _item(0x53, b"\x00\x01\x00\x01") * 2),
            "more than one asynchronous operations window sub-item",
        ),
        (
            _item(0x10, b"1") + _item(0x50, _item(0x54, b"\x00\x03" + b"1.2" + b"\x01")),
            "SCP/SCU role selection sub-item has 1 byte(s) after its SOP class UID, expected 2",
        ),
        (
            _item(0x10, b"1") + _item(0x50, _item(0x56, b"\x00\x09" + b"1.2")),
            "SOP class UID length 9 runs past end of SOP class extended negotiation sub-item",
        ),
        (
            _item(0x10, b"1")
            + _item(
                0x50,
                _item(0x57, b"\x00\x01" + b"1" + b"\x00\x01" + b"2" + b"\x00\x04\x00\x03" + b"1."),
            ),
            "related general SOP class UID length 3 runs past end of related general SOP",
        ),
        (
            _item(0x10, b"1")
            + _item(0x50, _item(0x58, b"\x01\x00\x00\x01" + b"u" + b"\x00\x00" + b"x")),
            "1 unexpected byte(s) after the secondary field",
        ),
        (
            _item(0x10, b"1") + _item(0x50, _item(0x59, b"\x00\x03" + b"ok")),
            "server response length 3 runs past end",
        ),
    ],
)
def test_malformed_associate_rq(items: bytes, reason: str) -> None:
    data = _associate(0x01, b"A", b"B", items)
    with pytest.raises(PDUDecodeError) as info:
        decode_pdu(data)
    assert reason in info.value.reason
    assert 0 <= info.value.offset <= len(data)


def test_non_ascii_called_ae_title_in_rq_is_an_error_but_not_in_ac() -> None:
    items = _item(0x10, b"1")
    with pytest.raises(PDUDecodeError, match="called AE title is not ASCII") as info:
        decode_pdu(_associate(0x01, b"AB\xc4", b"B", items))
    assert info.value.offset == 12
    ac = decode_pdu(_associate(0x02, b"AB\xc4", b"B", items))
    assert isinstance(ac, AssociateAC)
    assert ac.calling_ae_title == "B"


def test_accepted_context_without_transfer_syntax_is_an_error() -> None:
    items = _item(0x10, b"1") + _item(0x21, b"\x01\x00\x00\x00")
    with pytest.raises(PDUDecodeError, match="accepted presentation context 1 has no transfer"):
        decode_pdu(_associate(0x02, b"A", b"B", items))


def test_read_pdu_header() -> None:
    assert read_pdu_header(bytes.fromhex("04 00 00010000")) == (4, 0x10000)
    assert read_pdu_header(bytes.fromhex("01 ff ffffffff 0000")) == (1, 0xFFFFFFFF)
    with pytest.raises(PDUDecodeError):
        read_pdu_header(b"")
    with pytest.raises(PDUDecodeError, match="unknown PDU type 0x47"):
        read_pdu_header(b"GET / HTTP/1.1")


# --- encoding errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pdu",
    [
        AssociateRQ("A" * 17, "B", ()),
        AssociateRQ("A", "BÉ", ()),
        AssociateAC("A", "B", (), application_context_name="1.2.é"),
        AssociateRQ("A", "B", (PresentationContextRQ(256, VERIFICATION, (IMPLICIT_LE,)),)),
        AssociateRQ("A", "B", (PresentationContextRQ(1, VERIFICATION, ()),)),
        AssociateAC("A", "B", (PresentationContextAC(1, 0, None),)),
        AssociateRQ("A", "B", (), UserInformation(max_pdu_length=-1)),
        AssociateRQ("A", "B", (), UserInformation(implementation_version_name="X" * 17)),
        AssociateRQ("A", "B", (), UserInformation(unknown_items=(UnknownSubItem(0x51, b""),))),
        AssociateRQ(
            "A",
            "B",
            (),
            UserInformation(sop_class_extended=(SOPClassExtendedNegotiation("1", bytes(70000)),)),
        ),
        AAbort(source=256),
        AssociateRJ(1, 1, -1),
        PDataTF(()),
        PDataTF((PresentationDataValue(300, False, False, b""),)),
    ],
)
def test_unencodable_values_raise_value_error(pdu: PDU) -> None:
    with pytest.raises(ValueError):
        encode_pdu(pdu)


def test_encode_rejects_non_pdus() -> None:
    with pytest.raises(TypeError):
        encode_pdu(object())  # type: ignore[arg-type]


# --- malformed and random input -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_pdu_decode_error(data: bytes) -> None:
    _only_decode_errors(data)


@FUZZ
@given(st.integers(1, 7), st.binary(max_size=300))
def test_random_bodies_raise_only_pdu_decode_error(pdu_type: int, body: bytes) -> None:
    _only_decode_errors(struct.pack(">BxI", pdu_type, len(body)) + body)


@FUZZ
@given(all_pdus, st.data())
def test_truncations_raise_pdu_decode_error(pdu: PDU, data: st.DataObject) -> None:
    encoded = encode_pdu(pdu)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(PDUDecodeError):
        decode_pdu(encoded[:cut])
    # also with the PDU length adjusted to the truncated body, so the inner checks are reached
    if cut >= 6:
        body = encoded[6:cut]
        _only_decode_errors(encoded[:2] + struct.pack(">I", len(body)) + body)


@FUZZ
@given(st.one_of(associate_rqs, associate_acs, pdatas), st.data())
def test_corrupted_encodings_raise_only_pdu_decode_error(pdu: PDU, data: st.DataObject) -> None:
    encoded = bytearray(encode_pdu(pdu))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        # leave the PDU header alone so the body is actually parsed
        position = data.draw(st.integers(6, len(encoded) - 1), label="position")
        encoded[position] = data.draw(u8, label="byte")
    decoded = _only_decode_errors(bytes(encoded))
    if decoded is not None:
        # whatever decodes and can be encoded again must survive a second round trip
        try:
            again = encode_pdu(decoded)
        except ValueError:
            return
        assert decode_pdu(again) == decoded


def test_every_truncation_of_a_full_associate_rq() -> None:
    rq = _full_rq()
    encoded = encode_pdu(rq)
    for cut in range(len(encoded)):
        with pytest.raises(PDUDecodeError):
            decode_pdu(encoded[:cut])
        if cut >= 6:
            body = encoded[6:cut]
            _only_decode_errors(encoded[:2] + struct.pack(">I", len(body)) + body)


# --- pynetdicom cross-check -----------------------------------------------------------------------


def _full_rq() -> AssociateRQ:
    return AssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="AIODICOM",
        presentation_contexts=(
            PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),
            PresentationContextRQ(3, CT_STORAGE, (EXPLICIT_LE, IMPLICIT_LE)),
            PresentationContextRQ(5, STUDY_ROOT_FIND, (IMPLICIT_LE,)),
        ),
        user_information=UserInformation(
            max_pdu_length=65536,
            implementation_class_uid="1.2.826.0.1.3680043.9.9999.1",
            implementation_version_name="AIODICOM_010",
            async_operations_window=AsyncOperationsWindow(5, 3),
            role_selections=(RoleSelection(CT_STORAGE, scu_role=False, scp_role=True),),
            sop_class_extended=(SOPClassExtendedNegotiation(STUDY_ROOT_FIND, b"\x01\x01\x00"),),
            sop_class_common_extended=(
                SOPClassCommonExtendedNegotiation(
                    CT_STORAGE, STORAGE_SERVICE, ("1.2.840.10008.5.1.4.1.1.2.1",)
                ),
            ),
            user_identity_rq=UserIdentityRQ(2, True, b"alice", b"secret"),
        ),
    )


def test_pynetdicom_decodes_our_associate_rq() -> None:
    pdu_module = pytest.importorskip("pynetdicom.pdu")
    rq = _full_rq()
    theirs = pdu_module.A_ASSOCIATE_RQ()
    theirs.decode(encode_pdu(rq))
    assert theirs.called_ae_title == "ANY-SCP"
    assert theirs.calling_ae_title == "AIODICOM"
    assert theirs.application_context_name == APPLICATION_CONTEXT_NAME
    contexts = [
        (ctx.context_id, ctx.abstract_syntax, list(ctx.transfer_syntax))
        for ctx in theirs.to_primitive().presentation_context_definition_list
    ]
    assert contexts == [
        (c.context_id, c.abstract_syntax, list(c.transfer_syntaxes))
        for c in rq.presentation_contexts
    ]
    user = next(i for i in theirs.variable_items if type(i).__name__ == "UserInformationItem")
    assert user.maximum_length == 65536
    assert user.implementation_class_uid == "1.2.826.0.1.3680043.9.9999.1"
    assert user.implementation_version_name == "AIODICOM_010"
    assert (
        user.async_ops_window.maximum_number_operations_invoked,
        user.async_ops_window.maximum_number_operations_performed,
    ) == (5, 3)
    role = user.role_selection[CT_STORAGE]
    assert (role.scu_role, role.scp_role) == (False, True)
    (ext,) = user.ext_neg
    assert (ext.sop_class_uid, ext.app_info) == (STUDY_ROOT_FIND, b"\x01\x01\x00")
    (common,) = user.common_ext_neg
    assert common.sop_class_uid == CT_STORAGE
    assert common.service_class_uid == STORAGE_SERVICE
    assert common.related_general_sop_class_identification == ["1.2.840.10008.5.1.4.1.1.2.1"]
    identity = user.user_identity
    assert identity.user_identity_type == 2
    assert identity.positive_response_requested
    assert (identity.primary_field, identity.secondary_field) == (b"alice", b"secret")
    # and pynetdicom's own encoding of what it read is byte for byte ours
    assert theirs.encode() == encode_pdu(rq)


def _pynetdicom_user_information(ac: bool) -> list[object]:
    primitives = pytest.importorskip("pynetdicom.pdu_primitives")
    max_length = primitives.MaximumLengthNotification()
    max_length.maximum_length_received = 32768
    class_uid = primitives.ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = "1.2.3.4"
    version = primitives.ImplementationVersionNameNotification()
    version.implementation_version_name = "PYNETDICOM_304"
    window = primitives.AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 2
    window.maximum_number_operations_performed = 0
    role = primitives.SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = CT_STORAGE
    role.scu_role = True
    role.scp_role = True
    ext = primitives.SOPClassExtendedNegotiation()
    ext.sop_class_uid = STUDY_ROOT_FIND
    ext.service_class_application_information = b"\x01"
    identity = primitives.UserIdentityNegotiation()
    items = [max_length, class_uid, version, window, role, ext, identity]
    if ac:
        identity.server_response = b"token"
    else:
        identity.user_identity_type = 1
        identity.primary_field = b"bob"
        common = primitives.SOPClassCommonExtendedNegotiation()
        common.sop_class_uid = CT_STORAGE
        common.service_class_uid = STORAGE_SERVICE
        common.related_general_sop_class_identification = ["1.2.3", "1.2.4"]
        items.append(common)
    return items


def _expected_user_information(ac: bool) -> UserInformation:
    return UserInformation(
        max_pdu_length=32768,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="PYNETDICOM_304",
        async_operations_window=AsyncOperationsWindow(2, 0),
        role_selections=(RoleSelection(CT_STORAGE, True, True),),
        sop_class_extended=(SOPClassExtendedNegotiation(STUDY_ROOT_FIND, b"\x01"),),
        sop_class_common_extended=()
        if ac
        else (SOPClassCommonExtendedNegotiation(CT_STORAGE, STORAGE_SERVICE, ("1.2.3", "1.2.4")),),
        user_identity_rq=None if ac else UserIdentityRQ(1, False, b"bob", b""),
        user_identity_ac=UserIdentityAC(b"token") if ac else None,
    )


def test_we_decode_pynetdicom_associate_rq() -> None:
    pdu_module = pytest.importorskip("pynetdicom.pdu")
    primitives = pytest.importorskip("pynetdicom.pdu_primitives")
    presentation = pytest.importorskip("pynetdicom.presentation")
    primitive = primitives.A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = "PYNETDICOM"
    primitive.called_ae_title = "AIODICOM"
    for context_id, abstract, syntaxes in [
        (1, VERIFICATION, [IMPLICIT_LE]),
        (3, CT_STORAGE, [EXPLICIT_LE, IMPLICIT_LE]),
    ]:
        context = presentation.PresentationContext()
        context.context_id = context_id
        context.abstract_syntax = abstract
        context.transfer_syntax = syntaxes
        primitive.presentation_context_definition_list.append(context)
    primitive.user_information = _pynetdicom_user_information(ac=False)
    encoded = pdu_module.A_ASSOCIATE_RQ(primitive).encode()

    assert decode_pdu(encoded) == AssociateRQ(
        called_ae_title="AIODICOM",
        calling_ae_title="PYNETDICOM",
        presentation_contexts=(
            PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),
            PresentationContextRQ(3, CT_STORAGE, (EXPLICIT_LE, IMPLICIT_LE)),
        ),
        user_information=_expected_user_information(ac=False),
    )


def test_we_decode_pynetdicom_associate_ac() -> None:
    pdu_module = pytest.importorskip("pynetdicom.pdu")
    primitives = pytest.importorskip("pynetdicom.pdu_primitives")
    presentation = pytest.importorskip("pynetdicom.presentation")
    primitive = primitives.A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = "PYNETDICOM"
    primitive.called_ae_title = "AIODICOM"
    primitive.result = 0
    for context_id, result, syntax in [
        (1, 0, IMPLICIT_LE),
        (3, 3, IMPLICIT_LE),
        (5, 0, EXPLICIT_LE),
    ]:
        context = presentation.PresentationContext()
        context.context_id = context_id
        context.abstract_syntax = VERIFICATION
        context.transfer_syntax = [syntax]
        context.result = result
        primitive.presentation_context_definition_results_list.append(context)
    primitive.user_information = _pynetdicom_user_information(ac=True)
    encoded = pdu_module.A_ASSOCIATE_AC(primitive).encode()

    assert decode_pdu(encoded) == AssociateAC(
        called_ae_title="AIODICOM",
        calling_ae_title="PYNETDICOM",
        presentation_contexts=(
            PresentationContextAC(1, 0, IMPLICIT_LE),
            PresentationContextAC(3, 3, IMPLICIT_LE),
            PresentationContextAC(5, 0, EXPLICIT_LE),
        ),
        user_information=_expected_user_information(ac=True),
    )


def test_pynetdicom_decodes_our_associate_ac() -> None:
    pdu_module = pytest.importorskip("pynetdicom.pdu")
    ac = AssociateAC(
        called_ae_title="AIODICOM",
        calling_ae_title="PEER",
        presentation_contexts=(
            PresentationContextAC(1, 0, EXPLICIT_LE),
            PresentationContextAC(3, 4),
        ),
        user_information=UserInformation(
            max_pdu_length=0,
            implementation_class_uid="1.2.3",
            role_selections=(RoleSelection(CT_STORAGE, False, True),),
            user_identity_ac=UserIdentityAC(b"ok"),
        ),
    )
    theirs = pdu_module.A_ASSOCIATE_AC()
    theirs.decode(encode_pdu(ac))
    results = [
        (ctx.context_id, ctx.result, list(ctx.transfer_syntax))
        for ctx in theirs.to_primitive().presentation_context_definition_results_list
    ]
    assert results == [(1, 0, [EXPLICIT_LE]), (3, 4, [])]
    user = next(i for i in theirs.variable_items if type(i).__name__ == "UserInformationItem")
    assert user.maximum_length == 0
    assert user.role_selection[CT_STORAGE].scp_role
    assert user.user_identity.server_response == b"ok"


def test_other_pdus_match_pynetdicom() -> None:
    pdu_module = pytest.importorskip("pynetdicom.pdu")
    cases: list[tuple[PDU, Any]] = [
        (AssociateRJ(1, 3, 2), pdu_module.A_ASSOCIATE_RJ),
        (AReleaseRQ(), pdu_module.A_RELEASE_RQ),
        (AReleaseRP(), pdu_module.A_RELEASE_RP),
        (AAbort(2, 4), pdu_module.A_ABORT_RQ),
        (
            PDataTF(
                (
                    PresentationDataValue(1, True, True, b"\x08\x00\x00\x00"),
                    PresentationDataValue(1, False, False, b"abc"),
                )
            ),
            pdu_module.P_DATA_TF,
        ),
    ]
    for ours, theirs_class in cases:
        theirs = theirs_class()
        theirs.decode(encode_pdu(ours))
        assert theirs.encode() == encode_pdu(ours)
        assert decode_pdu(theirs.encode()) == ours
