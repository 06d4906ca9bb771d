"""The DICOM UL state machine against PS3.8 Table 9-10, cell by cell, plus framing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.buffer import INITIAL_SIZE, ReceiveBuffer
from aiodicom.errors import LocalProtocolError
from aiodicom.pdu import (
    PDU,
    AAbort,
    AReleaseRP,
    AReleaseRQ,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    UserInformation,
    decode_pdu,
    encode_pdu,
    read_pdu_header,
)
from aiodicom.statemachine import (
    ASSOCIATION_PDU_SIZE_LIMIT,
    Aborted,
    AssociateAccepted,
    AssociateRejected,
    AssociateRequestReceived,
    AssociationStateMachine,
    ConnectionClosed,
    DataReceived,
    Event,
    ReleaseConfirmed,
    ReleaseRequested,
    State,
)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"

RQ = AssociateRQ(
    called_ae_title="ANY-SCP",
    calling_ae_title="AIODICOM",
    presentation_contexts=(PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),),
    user_information=UserInformation(max_pdu_length=16384, implementation_class_uid="1.2.3"),
)
AC = AssociateAC(
    called_ae_title="ANY-SCP",
    calling_ae_title="AIODICOM",
    presentation_contexts=(PresentationContextAC(1, 0, IMPLICIT_LE),),
    user_information=UserInformation(max_pdu_length=16384, implementation_class_uid="1.2.3"),
)
RJ = AssociateRJ(result=1, source=1, reason=7)
PDATA = PDataTF((PresentationDataValue(1, True, True, b"\x00\x01\x02\x03"),))
PEER_ABORT = AAbort(source=2, reason=4)
UNKNOWN_PDU = b"\x0a\x00\x00\x00\x00\x02\x00\x00"  # PDU type 0x0A does not exist

REQUESTOR, ACCEPTOR = "requestor", "acceptor"


def decode_stream(data: bytes) -> list[PDU]:
    """Split bytes sent by the machine into PDUs and decode each."""
    pdus: list[PDU] = []
    pos = 0
    while pos < len(data):
        _, length = read_pdu_header(data[pos : pos + 6])
        pdus.append(decode_pdu(data[pos : pos + 6 + length]))
        pos += 6 + length
    return pdus


# --- PS3.8 Table 9-10, transcribed; "." is an empty cell ---------------------------------------

TABLE_9_10 = """
       Sta1 Sta2 Sta3 Sta4 Sta5 Sta6 Sta7 Sta8 Sta9 Sta10 Sta11 Sta12 Sta13
Evt1   AE-1 .    .    .    .    .    .    .    .    .     .     .     .
Evt2   .    .    .    AE-2 .    .    .    .    .    .     .     .     .
Evt3   .    AA-1 AA-8 .    AE-3 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt4   .    AA-1 AA-8 .    AE-4 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt5   AE-5 .    .    .    .    .    .    .    .    .     .     .     .
Evt6   .    AE-6 AA-8 .    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-7
Evt7   .    .    AE-7 .    .    .    .    .    .    .     .     .     .
Evt8   .    .    AE-8 .    .    .    .    .    .    .     .     .     .
Evt9   .    .    .    .    .    DT-1 .    AR-7 .    .     .     .     .
Evt10  .    AA-1 AA-8 .    AA-8 DT-2 AR-6 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt11  .    .    .    .    .    AR-1 .    .    .    .     .     .     .
Evt12  .    AA-1 AA-8 .    AA-8 AR-2 AR-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt13  .    AA-1 AA-8 .    AA-8 AA-8 AR-3 AA-8 AA-8 AR-10 AR-3  AA-8  AA-6
Evt14  .    .    .    .    .    .    .    AR-4 AR-9 .     .     AR-4  .
Evt15  .    .    AA-1 AA-2 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1  AA-1  AA-1  .
Evt16  .    AA-2 AA-3 .    AA-3 AA-3 AA-3 AA-3 AA-3 AA-3  AA-3  AA-3  AA-2
Evt17  .    AA-5 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4  AA-4  AA-4  AR-5
Evt18  .    AA-2 .    .    .    .    .    .    .    .     .     .     AA-2
Evt19  .    AA-1 AA-8 .    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-7
"""


def _parse_table() -> dict[tuple[int, int], str | None]:
    lines = [line.split() for line in TABLE_9_10.strip().splitlines()]
    states = [int(name[3:]) for name in lines[0]]
    table: dict[tuple[int, int], str | None] = {}
    for row in lines[1:]:
        event = int(row[0][3:])
        assert len(row) == 14, row
        for state, cell in zip(states, row[1:], strict=True):
            table[event, state] = None if cell == "." else cell
    return table


TABLE = _parse_table()

# Which side can be in each state: Sta2/3 only happen to an acceptor, Sta4/5 to a requestor, and
# the collision states are split by role (AR-8).
ROLES = {
    1: (REQUESTOR, ACCEPTOR),
    2: (ACCEPTOR,),
    3: (ACCEPTOR,),
    4: (REQUESTOR,),
    5: (REQUESTOR,),
    6: (REQUESTOR, ACCEPTOR),
    7: (REQUESTOR, ACCEPTOR),
    8: (REQUESTOR, ACCEPTOR),
    9: (REQUESTOR,),
    10: (ACCEPTOR,),
    11: (REQUESTOR,),
    12: (ACCEPTOR,),
    13: (REQUESTOR, ACCEPTOR),
}


def machine_in(state: int, role: str, **kwargs: int) -> AssociationStateMachine:
    """A machine driven to ``Sta<state>`` by legal steps, with its output drained."""
    sm = AssociationStateMachine(requestor=role == REQUESTOR, **kwargs)
    if state != 1:
        if role == REQUESTOR:
            sm.request_association(RQ)
            if state != 4:
                sm.connection_made()
                if state != 5:
                    sm.receive_data(encode_pdu(AC))
        else:
            sm.connection_made()
            if state != 2:
                sm.receive_data(encode_pdu(RQ))
                if state != 3:
                    sm.accept(AC)
        if state == 8:
            sm.receive_data(encode_pdu(AReleaseRQ()))
        elif state == 13:
            sm.receive_data(encode_pdu(AReleaseRQ()))
            sm.release_response()
        elif state in (7, 9, 10, 11, 12):
            sm.release()
            if state != 7:
                sm.receive_data(encode_pdu(AReleaseRQ()))  # the collision
            if state == 11:
                sm.release_response()
            elif state == 12:
                sm.receive_data(encode_pdu(AReleaseRP()))
    sm.data_to_send()
    assert sm.state is State(state)
    return sm


# What each event does to a machine; the network ones return the events reported.
Apply = Callable[[AssociationStateMachine], "list[Event] | None"]
EVENTS: dict[int, Apply] = {
    1: lambda sm: sm.request_association(RQ),
    2: lambda sm: sm.connection_made(),
    3: lambda sm: sm.receive_data(encode_pdu(AC)),
    4: lambda sm: sm.receive_data(encode_pdu(RJ)),
    5: lambda sm: sm.connection_made(),
    6: lambda sm: sm.receive_data(encode_pdu(RQ)),
    7: lambda sm: sm.accept(AC),
    8: lambda sm: sm.reject(RJ),
    9: lambda sm: sm.send_data(PDATA),
    10: lambda sm: sm.receive_data(encode_pdu(PDATA)),
    11: lambda sm: sm.release(),
    12: lambda sm: sm.receive_data(encode_pdu(AReleaseRQ())),
    13: lambda sm: sm.receive_data(encode_pdu(AReleaseRP())),
    14: lambda sm: sm.release_response(),
    15: lambda sm: sm.abort(),
    16: lambda sm: sm.receive_data(encode_pdu(PEER_ABORT)),
    17: lambda sm: sm.connection_closed(),
    18: lambda sm: sm.artim_expired(),
    19: lambda sm: sm.receive_data(UNKNOWN_PDU),
}
USER_PRIMITIVES = {1, 2, 5, 7, 8, 9, 11, 14, 15}
PDU_EVENTS = {3, 4, 6, 10, 12, 13, 16, 19}

# connection_made() is Evt2 for a requestor and Evt5 for an acceptor; request_association() has
# no meaning for an acceptor at all.
REQUESTOR_ONLY = {1, 2}
ACCEPTOR_ONLY = {5}


def _abort_reason(event: int) -> int:
    # PS3.8 9.3.8: 1 unrecognized-PDU (the unknown type of Evt19 here), 2 unexpected-PDU.
    return 1 if event == 19 else 2


class Outcome:
    def __init__(
        self,
        state: int,
        sent: list[PDU] | None = None,
        events: list[Event] | None = None,
        *,
        close: bool = False,
        artim: bool = False,
    ) -> None:
        self.state = State(state)
        self.sent = sent or []
        self.events = events or []
        self.close = close
        self.artim = artim


def expected_outcome(action: str, event: int, role: str) -> Outcome:
    provider_abort = AAbort(2, _abort_reason(event))
    match action:
        case "AE-1":
            return Outcome(4)
        case "AE-2":
            return Outcome(5, [RQ])
        case "AE-3":
            return Outcome(6, events=[AssociateAccepted(AC)])
        case "AE-4":
            return Outcome(1, events=[AssociateRejected(RJ)], close=True)
        case "AE-5":
            return Outcome(2, artim=True)
        case "AE-6":
            return Outcome(3, events=[AssociateRequestReceived(RQ)])
        case "AE-7":
            return Outcome(6, [AC])
        case "AE-8":
            return Outcome(13, [RJ], artim=True)
        case "DT-1":
            return Outcome(6, [PDATA])
        case "DT-2":
            return Outcome(6, events=[DataReceived(PDATA)])
        case "AR-1":
            return Outcome(7, [AReleaseRQ()])
        case "AR-2":
            return Outcome(8, events=[ReleaseRequested()])
        case "AR-3":
            return Outcome(1, events=[ReleaseConfirmed()], close=True)
        case "AR-4":
            return Outcome(13, [AReleaseRP()], artim=True)
        case "AR-5":
            return Outcome(1, events=[ConnectionClosed()], close=True)
        case "AR-6":
            return Outcome(7, events=[DataReceived(PDATA)])
        case "AR-7":
            return Outcome(8, [PDATA])
        case "AR-8":
            return Outcome(
                9 if role == REQUESTOR else 10, events=[ReleaseRequested(collision=True)]
            )
        case "AR-9":
            return Outcome(11, [AReleaseRP()])
        case "AR-10":
            return Outcome(12, events=[ReleaseConfirmed()])
        case "AA-1":
            # The user's own abort carries its source; an unwanted PDU in Sta2 is refused by the
            # provider, which says why.
            return Outcome(13, [AAbort(0, 0) if event == 15 else provider_abort], artim=True)
        case "AA-2":
            return Outcome(1, close=True)
        case "AA-3":
            return Outcome(1, events=[Aborted(2, 4, by_peer=True)], close=True)
        case "AA-4":
            return Outcome(
                1, events=[Aborted(2, 0, by_peer=False, connection_lost=True)], close=True
            )
        case "AA-5":
            return Outcome(1, events=[ConnectionClosed()], close=True)
        case "AA-6":
            return Outcome(13, artim=True)
        case "AA-7":
            return Outcome(13, [provider_abort], artim=True)
        case "AA-8":
            events: list[Event] = [Aborted(2, _abort_reason(event), by_peer=False)]
            return Outcome(13, [provider_abort], events, artim=True)
    raise AssertionError(action)


def _cells() -> list[tuple[int, int, str]]:
    cells = []
    for (event, state), _ in sorted(TABLE.items()):
        for role in ROLES[state]:
            if event in REQUESTOR_ONLY and role != REQUESTOR:
                continue
            if event in ACCEPTOR_ONLY and role != ACCEPTOR:
                continue
            cells.append((event, state, role))
    return cells


CELLS = _cells()


def test_table_transcription_covers_every_cell() -> None:
    assert len(TABLE) == 19 * 13
    assert {s for _, s, _ in CELLS} == set(range(1, 14))
    assert {e for e, _, _ in CELLS} == set(range(1, 20))


@pytest.mark.parametrize(
    ("event", "state", "role"), CELLS, ids=[f"Evt{e}-Sta{s}-{r}" for e, s, r in CELLS]
)
def test_state_transition_table(event: int, state: int, role: str) -> None:
    sm = machine_in(state, role)
    action = TABLE[event, state]
    if action is None:
        _check_empty_cell(sm, event, state)
        return
    expected = expected_outcome(action, event, role)
    events = EVENTS[event](sm)
    assert sm.state is expected.state
    assert decode_stream(sm.data_to_send()) == expected.sent
    assert (events or []) == expected.events
    assert sm.should_close is expected.close
    assert sm.artim_running is expected.artim


def _check_empty_cell(sm: AssociationStateMachine, event: int, state: int) -> None:
    before = sm.state
    lenient = {
        # abort() never fails for want of an association (module docstring): nothing to do in
        # Sta1 and Sta13, and in Sta2 the connection is simply closed.
        (15, 1): (State.Sta1, False),
        (15, 13): (State.Sta13, False),
        (15, 2): (State.Sta1, True),
        # A release response in Sta10 is held until the peer's A-RELEASE-RP.
        (14, 10): (State.Sta10, False),
    }
    if (event, state) in lenient:
        assert EVENTS[event](sm) is None
        next_state, close = lenient[event, state]
        assert sm.state is next_state
        assert sm.should_close is close
        assert sm.data_to_send() == b""
        return
    if event in USER_PRIMITIVES or event in PDU_EVENTS:
        # User primitives the table does not allow, and bytes without a transport connection.
        with pytest.raises(LocalProtocolError, match=before.name):
            EVENTS[event](sm)
    else:
        # A transport close in Sta1 and a stale ARTIM expiry change nothing.
        assert EVENTS[event](sm) == []
    assert sm.state is before
    assert sm.data_to_send() == b""


# --- paths through the table --------------------------------------------------------------------


def pump(a: AssociationStateMachine, b: AssociationStateMachine) -> tuple[list[Event], list[Event]]:
    """Carry bytes both ways until both are quiet; return what each side reported."""
    a_events: list[Event] = []
    b_events: list[Event] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_a and not to_b:
            return a_events, b_events
        if to_b:
            b_events += b.receive_data(to_b)
        if to_a:
            a_events += a.receive_data(to_a)


def associated_pair() -> tuple[AssociationStateMachine, AssociationStateMachine]:
    requestor = AssociationStateMachine(requestor=True)
    acceptor = AssociationStateMachine(requestor=False)
    requestor.request_association(RQ)
    requestor.connection_made()
    acceptor.connection_made()
    assert acceptor.artim_running
    _, got = pump(requestor, acceptor)
    assert got == [AssociateRequestReceived(RQ)]
    assert not acceptor.artim_running
    acceptor.accept(AC)
    got, _ = pump(requestor, acceptor)
    assert got == [AssociateAccepted(AC)]
    assert requestor.state is acceptor.state is State.Sta6
    return requestor, acceptor


def test_conversation_with_normal_release() -> None:
    requestor, acceptor = associated_pair()
    requestor.send_data(PDATA)
    acceptor.send_data(PDATA)
    a, b = pump(requestor, acceptor)
    assert a == b == [DataReceived(PDATA)]
    requestor.release()
    _, b = pump(requestor, acceptor)
    assert b == [ReleaseRequested()]
    acceptor.send_data(PDATA)  # AR-7: still allowed before answering
    acceptor.release_response()
    a, _ = pump(requestor, acceptor)
    assert a == [DataReceived(PDATA), ReleaseConfirmed()]  # AR-6 then AR-3
    assert requestor.state is State.Sta1 and requestor.should_close
    assert acceptor.state is State.Sta13 and acceptor.artim_running
    assert acceptor.connection_closed() == [ConnectionClosed()]
    assert acceptor.state is State.Sta1 and not acceptor.artim_running


def test_release_collision_both_sides() -> None:
    requestor, acceptor = associated_pair()
    requestor.release()
    acceptor.release()
    a, b = pump(requestor, acceptor)
    assert a == b == [ReleaseRequested(collision=True)]
    assert requestor.state is State.Sta9
    assert acceptor.state is State.Sta10
    requestor.release_response()  # AR-9: the requestor answers first
    _, b = pump(requestor, acceptor)
    assert b == [ReleaseConfirmed()]
    assert acceptor.state is State.Sta12
    acceptor.release_response()
    a, _ = pump(requestor, acceptor)
    assert a == [ReleaseConfirmed()]
    assert requestor.state is State.Sta1 and requestor.should_close
    assert acceptor.state is State.Sta13 and acceptor.artim_running


def test_release_collision_answered_at_once_by_acceptor() -> None:
    # An upper layer may answer every ReleaseRequested immediately: in Sta10 the answer waits
    # for the peer's A-RELEASE-RP, as PS3.8 orders.
    requestor, acceptor = associated_pair()
    requestor.release()
    acceptor.release()
    to_acceptor, to_requestor = requestor.data_to_send(), acceptor.data_to_send()
    assert acceptor.receive_data(to_acceptor) == [ReleaseRequested(collision=True)]
    assert requestor.receive_data(to_requestor) == [ReleaseRequested(collision=True)]
    acceptor.release_response()
    assert acceptor.data_to_send() == b""
    assert acceptor.state is State.Sta10
    requestor.release_response()
    a, b = pump(requestor, acceptor)
    assert b == [ReleaseConfirmed()]
    assert a == [ReleaseConfirmed()]
    assert acceptor.state is State.Sta13
    assert requestor.state is State.Sta1


def test_acceptor_rejects() -> None:
    requestor = AssociationStateMachine(requestor=True)
    acceptor = AssociationStateMachine(requestor=False)
    requestor.request_association(RQ)
    requestor.connection_made()
    acceptor.connection_made()
    pump(requestor, acceptor)
    acceptor.reject(RJ)
    a, _ = pump(requestor, acceptor)
    assert a == [AssociateRejected(RJ)]
    assert requestor.should_close
    assert acceptor.state is State.Sta13 and acceptor.artim_running
    assert acceptor.artim_expired() == []
    assert acceptor.state is State.Sta1 and acceptor.should_close


def test_provider_rejects_unsupported_protocol_version() -> None:
    sm = machine_in(2, ACCEPTOR)
    generation = sm.artim_generation
    rq = AssociateRQ("ANY-SCP", "AIODICOM", RQ.presentation_contexts, protocol_version=2)
    assert sm.receive_data(encode_pdu(rq)) == []
    assert sm.state is State.Sta13
    assert decode_stream(sm.data_to_send()) == [AssociateRJ(result=1, source=2, reason=2)]
    assert sm.artim_running and sm.artim_generation == generation + 1


def test_aa1_in_sta2_restarts_artim() -> None:
    sm = machine_in(2, ACCEPTOR)
    generation = sm.artim_generation
    sm.receive_data(encode_pdu(PDATA))
    assert sm.state is State.Sta13
    assert sm.artim_running and sm.artim_generation == generation + 1


def test_user_abort_values_are_sent() -> None:
    sm = machine_in(6, REQUESTOR)
    sm.abort(source=2, reason=6)
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 6)]
    assert sm.state is State.Sta13
    with pytest.raises(ValueError, match="source"):
        machine_in(6, REQUESTOR).abort(source=1)


def test_abort_while_connecting_closes() -> None:
    sm = machine_in(4, REQUESTOR)
    sm.abort()
    assert sm.state is State.Sta1 and sm.should_close
    assert sm.data_to_send() == b""


def test_malformed_pdu_of_known_type_is_invalid_parameter() -> None:
    sm = machine_in(6, ACCEPTOR)
    # A P-DATA-TF whose PDV item claims 100 bytes in a 6-byte body.
    bad = b"\x04\x00\x00\x00\x00\x06" + b"\x00\x00\x00\x64\x01\x03"
    events = sm.receive_data(bad + encode_pdu(PDATA))
    assert events == [Aborted(2, 6, by_peer=False)]
    assert isinstance(events[0], Aborted) and "P-DATA" in events[0].detail
    # The framing survived, so the P-DATA behind it was read and ignored (AA-6).
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 6)]
    assert sm.state is State.Sta13


def test_aa7_answers_invalid_pdu_in_sta13() -> None:
    sm = machine_in(13, REQUESTOR)
    assert sm.receive_data(b"\x05\x00\x00\x00\x00\x02\x00\x00") == []  # A-RELEASE-RQ, length 2
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 6)]
    assert sm.state is State.Sta13


def test_unexpected_pdu_detail_names_it() -> None:
    sm = machine_in(6, REQUESTOR)
    [event] = sm.receive_data(encode_pdu(RQ))
    assert isinstance(event, Aborted)
    assert "A-ASSOCIATE-RQ" in event.detail and "Sta6" in event.detail
    assert event.description.endswith("unexpected PDU")


def test_local_protocol_error_names_state() -> None:
    sm = machine_in(5, REQUESTOR)
    with pytest.raises(LocalProtocolError, match=r"send P-DATA in state Sta5"):
        sm.send_data(PDATA)
    with pytest.raises(LocalProtocolError, match="acceptor"):
        AssociationStateMachine(requestor=False).request_association(RQ)


def test_input_after_close_is_ignored() -> None:
    sm = machine_in(6, REQUESTOR)
    # A-ABORT followed by more PDUs in the same chunk: only the abort counts.
    events = sm.receive_data(encode_pdu(PEER_ABORT) + encode_pdu(PDATA))
    assert events == [Aborted(2, 4, by_peer=True)]
    assert sm.state is State.Sta1 and sm.should_close
    assert sm.receive_data(encode_pdu(PDATA)) == []
    assert sm.connection_closed() == []
    assert sm.data_to_send() == b""


def test_machine_can_be_reused_after_sta1() -> None:
    sm = machine_in(6, REQUESTOR)
    sm.connection_closed()
    assert sm.state is State.Sta1
    sm.request_association(RQ)
    sm.connection_made()
    assert not sm.should_close
    assert decode_stream(sm.data_to_send()) == [RQ]
    assert sm.receive_data(encode_pdu(AC)) == [AssociateAccepted(AC)]


def test_unencodable_request_fails_before_connecting() -> None:
    sm = AssociationStateMachine(requestor=True)
    bad = AssociateRQ("A" * 17, "AIODICOM", RQ.presentation_contexts)
    with pytest.raises(ValueError, match="AE"):
        sm.request_association(bad)
    assert sm.state is State.Sta1


def test_unencodable_pdu_leaves_state_unchanged() -> None:
    sm = machine_in(6, REQUESTOR)
    with pytest.raises(ValueError):
        sm.send_data(PDataTF(()))
    assert sm.state is State.Sta6
    assert sm.data_to_send() == b""


def test_receive_without_connection_raises() -> None:
    with pytest.raises(LocalProtocolError, match="Sta1"):
        AssociationStateMachine(requestor=False).receive_data(encode_pdu(RQ))
    with pytest.raises(LocalProtocolError, match="Sta4"):
        machine_in(4, REQUESTOR).receive_data(encode_pdu(AC))


# --- framing ------------------------------------------------------------------------------------

BIG = PDataTF((PresentationDataValue(1, False, True, bytes(range(256)) * 40),))
STREAM_PDUS: list[PDU] = [PDATA, BIG, PDATA, PDataTF((*PDATA.pdvs, *BIG.pdvs)), AReleaseRQ()]
STREAM = b"".join(encode_pdu(p) for p in STREAM_PDUS)
STREAM_EVENTS: list[Event] = [
    DataReceived(PDATA),
    DataReceived(BIG),
    DataReceived(PDATA),
    DataReceived(PDataTF((*PDATA.pdvs, *BIG.pdvs))),
    ReleaseRequested(),
]


def test_several_pdus_in_one_chunk() -> None:
    sm = machine_in(6, ACCEPTOR)
    assert sm.receive_data(STREAM) == STREAM_EVENTS
    assert sm.state is State.Sta8


def test_byte_by_byte() -> None:
    sm = machine_in(6, ACCEPTOR)
    events: list[Event] = []
    for i in range(len(STREAM)):
        events += sm.receive_data(STREAM[i : i + 1])
    assert events == STREAM_EVENTS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_slicing(cuts: list[int]) -> None:
    sm = machine_in(6, ACCEPTOR)
    bounds = [0, *sorted(cuts), len(STREAM)]
    events: list[Event] = []
    for start, end in itertools.pairwise(bounds):
        events += sm.receive_data(memoryview(STREAM)[start:end])
    assert events == STREAM_EVENTS


def test_whole_pdus_are_not_copied() -> None:
    sm = machine_in(6, ACCEPTOR)
    chunk = encode_pdu(BIG) + encode_pdu(PDATA)[:5]
    [event] = sm.receive_data(chunk)
    assert isinstance(event, DataReceived)
    data = event.pdu.pdvs[0].data
    assert isinstance(data, memoryview) and data.obj is chunk
    # The tail waits in a buffer that the next complete PDU is then decoded from.
    [event] = sm.receive_data(encode_pdu(PDATA)[5:])
    assert event == DataReceived(PDATA)
    data = event.pdu.pdvs[0].data
    assert isinstance(data, memoryview) and isinstance(data.obj, bytearray)


def test_buffered_pdu_data_survives_later_input() -> None:
    # The buffer a PDU was completed in is handed over, never reused.
    sm = machine_in(6, ACCEPTOR)
    raw = encode_pdu(BIG)
    sm.receive_data(raw[:10])
    [first] = sm.receive_data(raw[10:] + raw[:10])
    [second] = sm.receive_data(raw[10:])
    assert first == second == DataReceived(BIG)


def test_non_byte_memoryview_input() -> None:
    sm = machine_in(6, ACCEPTOR)
    raw = encode_pdu(PDATA) + bytes(2)  # 16 + 2 bytes: a whole number of 2-byte items
    assert sm.receive_data(memoryview(raw).cast("H")) == [DataReceived(PDATA)]


@pytest.mark.parametrize("split", [None, 3], ids=["one-chunk", "header-split"])
def test_oversized_pdu_aborts_without_buffering(split: int | None) -> None:
    sm = machine_in(6, REQUESTOR, max_receive_pdu_size=1024)
    header = b"\x04\x00" + (1 << 30).to_bytes(4, "big")
    if split is None:
        events = sm.receive_data(header + bytes(100))
    else:
        assert sm.receive_data(header[:split]) == []
        events = sm.receive_data(header[split:] + bytes(100))
    assert events == [Aborted(2, 6, by_peer=False)]
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 6)]
    assert sm.state is State.Sta13 and sm.artim_running
    assert len(sm._partial) == 0
    # The PDU boundaries are lost: the rest of its "body" is not taken for PDUs.
    assert sm.receive_data(encode_pdu(RQ)) == []
    assert sm.data_to_send() == b""
    assert sm.connection_closed() == [ConnectionClosed()]


def test_unknown_pdu_type_refused_from_its_header() -> None:
    sm = machine_in(6, REQUESTOR)
    events = sm.receive_data(b"\x0b\x00\xff\xff\xff\xff")
    assert events == [Aborted(2, 1, by_peer=False)]
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 1)]


def test_receive_limits() -> None:
    just_fits = PDataTF((PresentationDataValue(1, False, True, bytes(10)),))  # 22 bytes
    assert len(encode_pdu(just_fits)) == 22
    for kwargs in ({"max_receive_pdu_size": 22}, {"max_pdu_length": 16}):
        sm = machine_in(6, ACCEPTOR, **kwargs)
        assert sm.max_receive_pdu_size == 22
        assert sm.receive_data(encode_pdu(just_fits)) == [DataReceived(just_fits)]
        too_big = PDataTF((PresentationDataValue(1, False, True, bytes(11)),))
        assert sm.receive_data(encode_pdu(too_big)) == [Aborted(2, 6, by_peer=False)]
    # Both given: the smaller wins; 0 means no limit, as in the Maximum Length sub-item.
    assert AssociationStateMachine(True, max_pdu_length=100, max_receive_pdu_size=50)
    both = AssociationStateMachine(True, max_pdu_length=100, max_receive_pdu_size=50)
    assert both.max_receive_pdu_size == 50
    assert AssociationStateMachine(True, max_pdu_length=0).max_receive_pdu_size is None


def test_association_pdus_may_exceed_a_small_pdata_limit() -> None:
    contexts = tuple(
        PresentationContextRQ(2 * i + 1, f"1.2.840.10008.5.1.4.1.1.{i}", (IMPLICIT_LE,))
        for i in range(100)
    )
    big_rq = AssociateRQ("ANY-SCP", "AIODICOM", contexts)
    assert len(encode_pdu(big_rq)) > 4096
    sm = machine_in(2, ACCEPTOR, max_receive_pdu_size=4096)
    assert sm.receive_data(encode_pdu(big_rq)) == [AssociateRequestReceived(big_rq)]
    # ... but not without bound.
    sm = machine_in(2, ACCEPTOR, max_receive_pdu_size=4096)
    header = b"\x01\x00" + ASSOCIATION_PDU_SIZE_LIMIT.to_bytes(4, "big")
    assert sm.receive_data(header) == []
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 6)]


def test_data_to_send_joins_queued_pdus() -> None:
    sm = machine_in(6, REQUESTOR)
    assert sm.data_to_send() == b""
    sm.send_data(PDATA)
    sm.send_data(BIG)
    sm.release()
    assert decode_stream(sm.data_to_send()) == [PDATA, BIG, AReleaseRQ()]
    assert sm.data_to_send() == b""


def test_empty_input_is_nothing() -> None:
    sm = machine_in(6, REQUESTOR)
    assert sm.receive_data(b"") == []
    assert sm.state is State.Sta6


# --- receive_pdus: whole PDUs decoded where they lie in a receive buffer ------------------------


def _values(pdata: PDataTF) -> tuple[str, list[tuple[int, bool, bool, bytes]]]:
    return ("data", [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdata.pdvs])


def _snapshot(events: list[Event]) -> list[object]:
    """Events with their P-DATA values copied: views of a receive buffer do not last."""
    out: list[object] = []
    for event in events:
        if isinstance(event, DataReceived):
            out.append(_values(event.pdu))
        elif isinstance(event, Aborted):
            out.append((event, event.detail))
        else:
            out.append(event)
    return out


def feed_through_buffer(
    sm: AssociationStateMachine, chunks: list[bytes], buffer: ReceiveBuffer, *, as_socket: bool
) -> list[object]:
    """Drive ``receive_pdus`` as aiodicom.association does over a transport connection."""
    got: list[object] = []
    for chunk in chunks:
        rest = memoryview(chunk)
        while True:
            buffer.make_room()  # what Connection.receive() does before reading
            if as_socket:  # recv_into the free tail: a chunk may take several reads
                taken = min(len(rest), buffer.free)
                buffer.free_space()[:taken] = rest[:taken]
                buffer.filled(taken)
                rest = rest[taken:]
            else:  # a TLS stream hands over whole chunks
                buffer.append(rest)
                rest = rest[:0]
            data = buffer.data()
            events, used = sm.receive_pdus(data)
            assert 0 <= used <= len(data)
            for event in events:
                if isinstance(event, DataReceived):
                    for pdv in event.pdu.pdvs:  # decoded in place, not copied
                        assert isinstance(pdv.data, memoryview) and pdv.data.obj is data.obj
            got += _snapshot(events)
            buffer.consume(used)
            buffer.pending_size = sm.pending_pdu_size
            if not rest:
                break
    return got


def _pattern(size: int) -> bytes:
    return random.Random(size).randbytes(size)


PDVS = st.builds(
    PresentationDataValue,
    context_id=st.integers(min_value=0, max_value=127).map(lambda n: 2 * n + 1),
    is_command=st.booleans(),
    is_last=st.booleans(),
    # Mostly small values; some larger than the initial receive buffer, to make it grow.
    data=st.binary(max_size=200)
    | st.integers(min_value=INITIAL_SIZE - 100, max_value=3 * INITIAL_SIZE).map(_pattern),
)
PDATAS = st.builds(PDataTF, st.lists(PDVS, min_size=1, max_size=4).map(tuple))
ENDINGS: list[PDU | bytes | None] = [
    None, AReleaseRQ(), AReleaseRP(), AAbort(0, 0), PEER_ABORT, RQ, UNKNOWN_PDU,
]


def _encode(item: PDU | bytes) -> bytes:
    return item if isinstance(item, bytes) else encode_pdu(item)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from([REQUESTOR, ACCEPTOR]),
    limit=st.sampled_from([None, 1024, 2 * INITIAL_SIZE]),
    leading=st.lists(PDATAS, max_size=6),
    ending=st.sampled_from(ENDINGS),
    trailing=st.lists(PDATAS, max_size=2),
    initial_size=st.sampled_from([64, INITIAL_SIZE]),
    as_socket=st.booleans(),
    data=st.data(),
)
def test_receive_pdus_matches_receive_data(
    role: str,
    limit: int | None,
    leading: list[PDataTF],
    ending: PDU | bytes | None,
    trailing: list[PDataTF],
    initial_size: int,
    as_socket: bool,
    data: st.DataObject,
) -> None:
    items: list[PDU | bytes] = [*leading, *([] if ending is None else [ending]), *trailing]
    stream = b"".join(_encode(item) for item in items)
    cuts = data.draw(
        st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10), label="cuts"
    )
    bounds = [0, *sorted(cuts), len(stream)]
    chunks = [stream[start:end] for start, end in itertools.pairwise(bounds)]
    kwargs = {} if limit is None else {"max_receive_pdu_size": limit}
    by_data = machine_in(6, role, **kwargs)
    by_pdus = machine_in(6, role, **kwargs)

    expected: list[object] = []
    for chunk in chunks:
        expected += _snapshot(by_data.receive_data(chunk))
    buffer = ReceiveBuffer(initial_size)
    got = feed_through_buffer(by_pdus, chunks, buffer, as_socket=as_socket)

    assert got == expected
    assert by_pdus.state is by_data.state
    assert by_pdus.data_to_send() == by_data.data_to_send()
    assert by_pdus.should_close == by_data.should_close
    assert buffer.received == len(stream)
    # The P-DATA values are the ones encoded: the leading P-DATA-TFs, up to one that is too big.
    values = [event for event in got if isinstance(event, tuple) and event[0] == "data"]
    sent: list[object] = []
    for pdata in leading:
        if limit is not None and len(encode_pdu(pdata)) > limit:
            break
        sent.append(_values(pdata))
    assert values[: len(sent)] == sent
    # Nothing is left unread but the start of a PDU that never completed.
    if by_pdus.state is State.Sta6:
        assert len(buffer) == 0


def test_receive_pdus_leaves_an_incomplete_pdu_in_place() -> None:
    sm = machine_in(6, ACCEPTOR)
    raw = encode_pdu(BIG) + encode_pdu(PDATA)[:10]
    events, used = sm.receive_pdus(memoryview(raw))
    assert events == [DataReceived(BIG)] and used == len(encode_pdu(BIG))
    assert len(sm._partial) == 0  # not copied into the machine: the caller passes it again
    events, used = sm.receive_pdus(memoryview(encode_pdu(PDATA)))
    assert events == [DataReceived(PDATA)] and used == len(encode_pdu(PDATA))
    # Not even a whole header yet: nothing used.
    assert sm.receive_pdus(memoryview(encode_pdu(PDATA)[:5])) == ([], 0)
    assert sm.receive_pdus(memoryview(b"")) == ([], 0)
    assert sm.state is State.Sta6


@pytest.mark.parametrize("before", [b"", encode_pdu(PDATA)], ids=["alone", "after-a-pdu"])
def test_receive_pdus_refuses_an_oversized_pdu_from_its_header(before: bytes) -> None:
    sm = machine_in(6, REQUESTOR, max_receive_pdu_size=1024)
    header = b"\x04\x00" + (1 << 30).to_bytes(4, "big")
    buffer = ReceiveBuffer()
    buffer.append(before + header[:5])
    events, used = sm.receive_pdus(buffer.data())
    assert used == len(before) and sm.state is State.Sta6
    buffer.consume(used)
    buffer.append(header[5:])
    events, used = sm.receive_pdus(buffer.data())
    # Refused from its header alone, before any of its body arrived: every byte counts as used,
    # so the caller never makes room for the gigabyte announced.
    assert events == [Aborted(2, 6, by_peer=False)]
    assert used == len(buffer)
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 6)]
    assert sm.state is State.Sta13
    buffer.consume(used)
    buffer.pending_size = 0
    buffer.make_room()
    assert buffer.capacity == INITIAL_SIZE
    # The PDU boundaries are lost: what follows is not taken for PDUs, and all of it is used.
    rest = bytes(100) + encode_pdu(RQ) + encode_pdu(PDATA)
    assert sm.receive_pdus(memoryview(rest)) == ([], len(rest))
    assert sm.data_to_send() == b""
    assert sm.connection_closed() == [ConnectionClosed()]


def test_receive_pdus_loses_framing_on_an_unknown_pdu_type() -> None:
    sm = machine_in(6, ACCEPTOR)
    raw = encode_pdu(PDATA) + b"\x0b\x00\x00\x00\x00\x02\x00\x00" + encode_pdu(PDATA)
    events, used = sm.receive_pdus(memoryview(raw))
    assert events == [DataReceived(PDATA), Aborted(2, 1, by_peer=False)]
    assert used == len(raw)
    assert decode_stream(sm.data_to_send()) == [AAbort(2, 1)]
    for later in (encode_pdu(PDATA), b"\x01", encode_pdu(AReleaseRQ())):
        assert sm.receive_pdus(memoryview(later)) == ([], len(later))
    assert sm.state is State.Sta13


def test_receive_pdus_after_the_association_ended_uses_everything() -> None:
    sm = machine_in(6, REQUESTOR)
    raw = encode_pdu(PEER_ABORT) + encode_pdu(PDATA)
    events, used = sm.receive_pdus(memoryview(raw))
    assert events == [Aborted(PEER_ABORT.source, PEER_ABORT.reason, by_peer=True)]
    assert used == len(raw) and sm.state is State.Sta1 and sm.should_close
    assert sm.receive_pdus(memoryview(encode_pdu(PDATA))) == ([], len(encode_pdu(PDATA)))


def test_receive_pdus_without_connection_raises() -> None:
    with pytest.raises(LocalProtocolError, match="Sta1"):
        AssociationStateMachine(requestor=False).receive_pdus(memoryview(encode_pdu(RQ)))
    with pytest.raises(LocalProtocolError, match="Sta4"):
        machine_in(4, REQUESTOR).receive_pdus(memoryview(encode_pdu(AC)))


def test_receive_pdus_runs_an_association() -> None:
    # Request, accept, data and release, each side reading only through receive_pdus.
    requestor = AssociationStateMachine(requestor=True)
    acceptor = AssociationStateMachine(requestor=False)
    requestor.request_association(RQ)
    requestor.connection_made()
    acceptor.connection_made()
    buffers = {id(requestor): ReceiveBuffer(64), id(acceptor): ReceiveBuffer(64)}

    def deliver(sender: AssociationStateMachine, receiver: AssociationStateMachine) -> list[object]:
        data = sender.data_to_send()
        return feed_through_buffer(receiver, [data], buffers[id(receiver)], as_socket=True)

    assert deliver(requestor, acceptor) == [AssociateRequestReceived(RQ)]
    acceptor.accept(AC)
    assert deliver(acceptor, requestor) == [AssociateAccepted(AC)]
    requestor.send_data(BIG)
    requestor.send_data(PDATA)
    assert deliver(requestor, acceptor) == _snapshot([DataReceived(BIG), DataReceived(PDATA)])
    requestor.release()
    assert deliver(requestor, acceptor) == [ReleaseRequested()]
    acceptor.release_response()
    assert deliver(acceptor, requestor) == [ReleaseConfirmed()]
    assert requestor.state is State.Sta1 and requestor.should_close
    assert acceptor.state is State.Sta13
    assert acceptor.connection_closed() == [ConnectionClosed()]
    assert all(len(buffer) == 0 for buffer in buffers.values())


def test_encoded_pdata_is_sent_as_given_where_pdata_may_be_sent() -> None:
    requestor, acceptor = associated_pair()
    encoded = encode_pdu(PDATA)
    acceptor.send_encoded_data(encoded + encoded)
    got, _ = pump(requestor, acceptor)
    assert got == [DataReceived(PDATA), DataReceived(PDATA)]
    requestor.release()
    with pytest.raises(LocalProtocolError, match="cannot send P-DATA in state Sta7"):
        requestor.send_encoded_data(encoded)
