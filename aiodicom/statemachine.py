"""DICOM Upper Layer association state machine (PS3.8 section 9.2), sans-I/O.

Bytes received and user requests go in; events for the user and bytes to send come out. Nothing here
touches a socket or a clock: the caller runs the ARTIM timer when ``artim_running`` says so and
reports its expiry with :meth:`AssociationStateMachine.artim_expired`.

Its contract (the calls, the events, and where it adds to or makes precise PS3.8 Table 9-10)
is written in docs/architecture.md, "The state machine's contract"; tests/test_statemachine.py
checks every state/event cell of the table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, TypeVar

import attrs

from aiodicom.errors import LocalProtocolError, PDUDecodeError
from aiodicom.pdu import (
    P_DATA_TF,
    PDU,
    PDU_HEADER_LENGTH,
    AAbort,
    AReleaseRP,
    AReleaseRQ,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    decode_pdu,
    encode_pdu,
    pdata_values,
    read_pdu_header,
)
from aiodicom.ul_events import (
    Aborted,
    AssociateAccepted,
    AssociateRejected,
    AssociateRequestReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    ReleaseConfirmed,
    ReleaseRequested,
    State,
)

__all__ = [
    "ABORT_SOURCE_PROVIDER",
    "ABORT_SOURCE_USER",
    "ASSOCIATION_PDU_SIZE_LIMIT",
    "REASON_INVALID_PARAMETER_VALUE",
    "REASON_NOT_SPECIFIED",
    "REASON_UNEXPECTED_PARAMETER",
    "REASON_UNEXPECTED_PDU",
    "REASON_UNRECOGNIZED_PARAMETER",
    "REASON_UNRECOGNIZED_PDU",
    "Aborted",
    "AssociateAccepted",
    "AssociateRejected",
    "AssociateRequestReceived",
    "AssociationStateMachine",
    "ConnectionClosed",
    "DataReceived",
    "Event",
    "ReleaseConfirmed",
    "ReleaseRequested",
    "State",
]

# A-ABORT source and reason/diag values (PS3.8 section 9.3.8)
ABORT_SOURCE_USER: Final = 0
ABORT_SOURCE_PROVIDER: Final = 2
REASON_NOT_SPECIFIED: Final = 0
REASON_UNRECOGNIZED_PDU: Final = 1
REASON_UNEXPECTED_PDU: Final = 2
REASON_UNRECOGNIZED_PARAMETER: Final = 4
REASON_UNEXPECTED_PARAMETER: Final = 5
REASON_INVALID_PARAMETER_VALUE: Final = 6

ASSOCIATION_PDU_SIZE_LIMIT: Final = 1 << 20
"""Floor of the size limit for PDUs other than P-DATA-TF (see the module docstring)."""


# --- the transition table (PS3.8 Table 9-10) ------------------------------------------------


class _Evt(enum.IntEnum):
    """PS3.8 events, valued by their number."""

    ASSOCIATE_REQUEST = 1
    TRANSPORT_CONFIRM = 2
    ASSOCIATE_AC_PDU = 3
    ASSOCIATE_RJ_PDU = 4
    TRANSPORT_INDICATION = 5
    ASSOCIATE_RQ_PDU = 6
    ASSOCIATE_ACCEPT = 7
    ASSOCIATE_REJECT = 8
    PDATA_REQUEST = 9
    PDATA_PDU = 10
    RELEASE_REQUEST = 11
    RELEASE_RQ_PDU = 12
    RELEASE_RP_PDU = 13
    RELEASE_RESPONSE = 14
    ABORT_REQUEST = 15
    ABORT_PDU = 16
    TRANSPORT_CLOSED = 17
    ARTIM_EXPIRED = 18
    INVALID_PDU = 19


_S = State
_ESTABLISHED: Final = (_S.Sta6, _S.Sta7, _S.Sta8, _S.Sta9, _S.Sta10, _S.Sta11, _S.Sta12)


def _row(*cells: tuple[State | tuple[State, ...], str]) -> dict[State, str]:
    row: dict[State, str] = {}
    for states, action in cells:
        for state in states if isinstance(states, tuple) else (states,):
            row[state] = action
    return row


def _unexpected_pdu_row(**overrides: str) -> dict[State, str]:
    # Most PDUs share one pattern: abort in Sta2, A-P-ABORT while connected, ignore in Sta13.
    row = _row((_S.Sta2, "AA-1"), ((_S.Sta3, _S.Sta5, *_ESTABLISHED), "AA-8"), (_S.Sta13, "AA-6"))
    row.update({State[name]: action for name, action in overrides.items()})
    return row


_TABLE: Final[dict[_Evt, dict[State, str]]] = {
    _Evt.ASSOCIATE_REQUEST: _row((_S.Sta1, "AE-1")),
    _Evt.TRANSPORT_CONFIRM: _row((_S.Sta4, "AE-2")),
    _Evt.ASSOCIATE_AC_PDU: _unexpected_pdu_row(Sta5="AE-3"),
    _Evt.ASSOCIATE_RJ_PDU: _unexpected_pdu_row(Sta5="AE-4"),
    _Evt.TRANSPORT_INDICATION: _row((_S.Sta1, "AE-5")),
    _Evt.ASSOCIATE_RQ_PDU: _unexpected_pdu_row(Sta2="AE-6", Sta13="AA-7"),
    _Evt.ASSOCIATE_ACCEPT: _row((_S.Sta3, "AE-7")),
    _Evt.ASSOCIATE_REJECT: _row((_S.Sta3, "AE-8")),
    _Evt.PDATA_REQUEST: _row((_S.Sta6, "DT-1"), (_S.Sta8, "AR-7")),
    _Evt.PDATA_PDU: _unexpected_pdu_row(Sta6="DT-2", Sta7="AR-6"),
    _Evt.RELEASE_REQUEST: _row((_S.Sta6, "AR-1")),
    _Evt.RELEASE_RQ_PDU: _unexpected_pdu_row(Sta6="AR-2", Sta7="AR-8"),
    _Evt.RELEASE_RP_PDU: _unexpected_pdu_row(Sta7="AR-3", Sta10="AR-10", Sta11="AR-3"),
    _Evt.RELEASE_RESPONSE: _row((_S.Sta8, "AR-4"), (_S.Sta9, "AR-9"), (_S.Sta12, "AR-4")),
    _Evt.ABORT_REQUEST: _row(((_S.Sta3, _S.Sta5, *_ESTABLISHED), "AA-1"), (_S.Sta4, "AA-2")),
    _Evt.ABORT_PDU: _row(
        ((_S.Sta2, _S.Sta13), "AA-2"), ((_S.Sta3, _S.Sta5, *_ESTABLISHED), "AA-3")
    ),
    _Evt.TRANSPORT_CLOSED: _row(
        (_S.Sta2, "AA-5"), ((_S.Sta3, _S.Sta4, _S.Sta5, *_ESTABLISHED), "AA-4"), (_S.Sta13, "AR-5")
    ),
    _Evt.ARTIM_EXPIRED: _row(((_S.Sta2, _S.Sta13), "AA-2")),
    _Evt.INVALID_PDU: _unexpected_pdu_row(Sta13="AA-7"),
}

_PDU_EVENTS: Final[dict[type, _Evt]] = {
    AssociateRQ: _Evt.ASSOCIATE_RQ_PDU,
    AssociateAC: _Evt.ASSOCIATE_AC_PDU,
    AssociateRJ: _Evt.ASSOCIATE_RJ_PDU,
    PDataTF: _Evt.PDATA_PDU,
    AReleaseRQ: _Evt.RELEASE_RQ_PDU,
    AReleaseRP: _Evt.RELEASE_RP_PDU,
    AAbort: _Evt.ABORT_PDU,
}

_PDU_NAMES: Final[dict[type, str]] = {
    AssociateRQ: "A-ASSOCIATE-RQ",
    AssociateAC: "A-ASSOCIATE-AC",
    AssociateRJ: "A-ASSOCIATE-RJ",
    PDataTF: "P-DATA-TF",
    AReleaseRQ: "A-RELEASE-RQ",
    AReleaseRP: "A-RELEASE-RP",
    AAbort: "A-ABORT",
}

_CONNECTED_STATES: Final = frozenset(State) - {State.Sta1, State.Sta4}


@attrs.frozen
class _Trigger:
    """One PS3.8 event with what its action needs: the PDU received or to send, and for
    provider aborts the reason to send and a description."""

    event: _Evt
    pdu: PDU | None = None
    reason: int = REASON_UNEXPECTED_PDU
    detail: str = ""


_T = TypeVar("_T")


def _expect(value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind):  # pragma: no cover - the table routes PDUs by type
        raise AssertionError(f"expected {kind.__name__}, got {value!r}")
    return value


# --- the machine ---------------------------------------------------------------------------


class AssociationStateMachine:
    """One side of one association, per PS3.8 section 9.2. See the module docstring."""

    def __init__(
        self,
        requestor: bool,
        *,
        max_pdu_length: int | None = None,
        max_receive_pdu_size: int | None = None,
    ) -> None:
        limits: list[int] = []
        if max_pdu_length:
            if max_pdu_length < 0:
                raise ValueError(f"max_pdu_length must not be negative, got {max_pdu_length}")
            limits.append(max_pdu_length + PDU_HEADER_LENGTH)
        if max_receive_pdu_size is not None:
            if max_receive_pdu_size <= PDU_HEADER_LENGTH:
                raise ValueError(
                    f"max_receive_pdu_size must exceed {PDU_HEADER_LENGTH}, "
                    f"got {max_receive_pdu_size}"
                )
            limits.append(max_receive_pdu_size)
        self._pdata_limit: int | None = min(limits) if limits else None
        self._association_pdu_limit: int | None = (
            None
            if self._pdata_limit is None
            else max(self._pdata_limit, ASSOCIATION_PDU_SIZE_LIMIT)
        )
        self._requestor = requestor
        self._state = State.Sta1
        self._request_bytes = b""
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._should_close = False
        self._artim_running = False
        self._artim_generation = 0
        # Set in Sta10 when the user answered the collision before the peer's A-RELEASE-RP.
        self._release_response_pending = False
        # Framing for receive_data(): the start of an incomplete PDU, kept between calls.
        self._partial = bytearray()
        #: The whole size of the incomplete PDU the last receive left over (0: none, or its
        #: header is not complete yet), so a caller can make room for all of it.
        self.pending_pdu_size = 0
        # True once PDU boundaries are lost or the transport is being closed: input is ignored.
        self._ignore_input = False
        #: Given each value (context ID, message control header, view) of a P-DATA-TF received
        #: in Sta6 instead of a DataReceived event, in stream order. Views of the input.
        self.on_data_value: Callable[[int, int, memoryview], object] | None = None

    # --- properties ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def requestor(self) -> bool:
        """True for the association-requestor side, False for the acceptor."""
        return self._requestor

    @property
    def max_receive_pdu_size(self) -> int | None:
        """The largest whole P-DATA-TF PDU accepted (``None``: no limit)."""
        return self._pdata_limit

    @property
    def should_close(self) -> bool:
        return self._should_close

    @property
    def artim_running(self) -> bool:
        return self._artim_running

    @property
    def artim_generation(self) -> int:
        """Incremented each time ARTIM is started or restarted."""
        return self._artim_generation

    # --- user primitives ----------------------------------------------------------------------

    def request_association(self, request: AssociateRQ) -> None:
        """A-ASSOCIATE request (Evt1); open the transport connection next."""
        if not self._requestor:
            raise LocalProtocolError("an association acceptor cannot request an association")
        self._user_primitive(_Trigger(_Evt.ASSOCIATE_REQUEST, request), "request an association")

    def connection_made(self) -> None:
        """The transport connection is open: Evt2 for a requestor, Evt5 for an acceptor."""
        if self._requestor:
            self._user_primitive(_Trigger(_Evt.TRANSPORT_CONFIRM), "report a transport connection")
        else:
            self._user_primitive(
                _Trigger(_Evt.TRANSPORT_INDICATION), "report a transport connection"
            )

    def accept(self, response: AssociateAC) -> None:
        """A-ASSOCIATE response, accept (Evt7)."""
        self._user_primitive(_Trigger(_Evt.ASSOCIATE_ACCEPT, response), "accept an association")

    def reject(self, response: AssociateRJ) -> None:
        """A-ASSOCIATE response, reject (Evt8)."""
        self._user_primitive(_Trigger(_Evt.ASSOCIATE_REJECT, response), "reject an association")

    def send_data(self, pdata: PDataTF) -> None:
        """P-DATA request (Evt9). The PDV values are copied once, into the outgoing bytes."""
        self._user_primitive(_Trigger(_Evt.PDATA_REQUEST, pdata), "send P-DATA")

    def send_encoded_data(self, pdus: bytes) -> None:
        """P-DATA request (Evt9) for whole P-DATA-TF PDUs the caller encoded, queued as they are
        (DT-1 and AR-7 send and keep the state); see :func:`aiodicom.dimse.encode_message`."""
        if self._state not in _TABLE[_Evt.PDATA_REQUEST]:
            raise LocalProtocolError(
                f"cannot send P-DATA in state {self._state.name} ({self._state.description})"
            )
        self._outgoing.append(pdus)

    def release(self) -> None:
        """A-RELEASE request (Evt11)."""
        self._user_primitive(_Trigger(_Evt.RELEASE_REQUEST), "request a release")

    def release_response(self) -> None:
        """A-RELEASE response (Evt14); in Sta10 held until the peer's A-RELEASE-RP."""
        if self._state is State.Sta10 and not self._release_response_pending:
            self._release_response_pending = True
            return
        self._user_primitive(_Trigger(_Evt.RELEASE_RESPONSE), "answer a release request")

    def abort(self, source: int = ABORT_SOURCE_USER, reason: int = REASON_NOT_SPECIFIED) -> None:
        """A-ABORT request (Evt15)."""
        if source not in (ABORT_SOURCE_USER, ABORT_SOURCE_PROVIDER):
            raise ValueError(f"A-ABORT source must be 0 (user) or 2 (provider), got {source}")
        if not 0 <= reason <= 0xFF:
            raise ValueError(f"A-ABORT reason must fit in one byte, got {reason}")
        if self._state in (State.Sta1, State.Sta13):
            return
        if self._state is State.Sta2:
            self._state = self._aa_2(_Trigger(_Evt.ABORT_REQUEST))
            return
        self._user_primitive(_Trigger(_Evt.ABORT_REQUEST, AAbort(source, reason)), "abort")

    # --- transport input ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Bytes from the transport, in any slicing (Evt3, 4, 6, 10, 12, 13, 16, 19)."""
        if self._state not in _CONNECTED_STATES and not self._ignore_input:
            raise LocalProtocolError(
                f"cannot receive data in state {self._state.name} "
                f"({self._state.description}): there is no transport connection"
            )
        if self._ignore_input or not data:
            return self._take_events()
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if self._partial:
            # A fresh buffer for what follows: the PDUs decoded from this one may keep views.
            buffered, self._partial = self._partial, bytearray()
            buffered += view
            view = memoryview(buffered)
        used = self._consume(view)
        if used < len(view):
            self._partial = bytearray(view[used:])
        return self._take_events()

    def receive_pdus(self, data: memoryview) -> tuple[list[Event], int]:
        """Decode the whole PDUs at the start of ``data``, in place; return the events and how many
        bytes were used.

        The zero-copy sibling of :meth:`receive_data` for a caller that owns a receive buffer: an
        incomplete PDU at the end is left there (not copied into the machine) for the caller to
        pass again once more bytes follow it; :attr:`pending_pdu_size` then says how large it is.
        Its header is checked as soon as it is complete, so an oversized PDU is refused before
        the caller makes room for it.
        """
        if self._state not in _CONNECTED_STATES and not self._ignore_input:
            raise LocalProtocolError(
                f"cannot receive data in state {self._state.name} "
                f"({self._state.description}): there is no transport connection"
            )
        used = self._consume(data)
        return self._take_events(), used

    def connection_closed(self) -> list[Event]:
        """The transport connection closed (Evt17)."""
        if self._state is not State.Sta1:
            self._handle(_Trigger(_Evt.TRANSPORT_CLOSED))
        return self._take_events()

    def artim_expired(self) -> list[Event]:
        """The ARTIM timer expired (Evt18); ignored when it is no longer running."""
        if self._artim_running:
            self._handle(_Trigger(_Evt.ARTIM_EXPIRED))
        return self._take_events()

    # --- output -------------------------------------------------------------------------------

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outgoing)

    def data_to_send(self) -> bytes:
        """Everything queued for the transport since the last call (``b""`` when nothing)."""
        out = self._outgoing
        if not out:
            return b""
        self._outgoing = []
        # One PDU per flush is the common case: hand its bytes over without another copy.
        return out[0] if len(out) == 1 else b"".join(out)

    # --- internals: dispatch ------------------------------------------------------------------

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _user_primitive(self, trigger: _Trigger, what: str) -> None:
        if self._state not in _TABLE[trigger.event]:
            raise LocalProtocolError(
                f"cannot {what} in state {self._state.name} ({self._state.description})"
            )
        self._handle(trigger)

    def _handle(self, trigger: _Trigger) -> None:
        action = _TABLE[trigger.event][self._state]
        self._state = _ACTIONS[action](self, trigger)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _send(self, pdu: PDU) -> None:
        self._outgoing.append(encode_pdu(pdu))

    def _start_artim(self) -> None:
        self._artim_running = True
        self._artim_generation += 1

    def _close(self) -> None:
        self._should_close = True
        self._artim_running = False
        self._ignore_input = True
        self._partial = bytearray()

    def _new_connection(self) -> None:
        self._should_close = False
        self._ignore_input = False
        self._release_response_pending = False
        self._partial = bytearray()

    def _provider_abort(self, trigger: _Trigger) -> str:
        """Send the A-ABORT for an unwanted or invalid PDU; return what was wrong."""
        self._send(AAbort(ABORT_SOURCE_PROVIDER, trigger.reason))
        if trigger.detail:
            return trigger.detail
        # Built here rather than for every PDU received: only aborts need the words.
        return (
            f"unexpected {_PDU_NAMES[type(trigger.pdu)]} PDU in state {self._state.name} "
            f"({self._state.description})"
        )

    # --- internals: framing -------------------------------------------------------------------

    def _consume(self, data: memoryview) -> int:
        """Decode the whole PDUs at the start of ``data`` in place (P-DATA values stay views of
        it); return how many bytes they took, and note the size of an incomplete one after them
        in :attr:`pending_pdu_size`."""
        end = len(data)
        pos = 0
        self.pending_pdu_size = 0
        while not self._ignore_input and end - pos >= PDU_HEADER_LENGTH:
            size = self._pdu_size(data[pos : pos + PDU_HEADER_LENGTH])
            if size is None:
                break
            if end - pos < size:
                self.pending_pdu_size = size
                break
            self._dispatch(data[pos : pos + size])
            pos += size
        # Once framing is lost every byte is ignored, so all of them count as used.
        return end if self._ignore_input else pos

    def _pdu_size(self, header: bytes | memoryview) -> int | None:
        """The whole size of the PDU starting with ``header``, or ``None`` when the PDU is refused
        without reading its body (the abort is then done and input ignored from here on)."""
        try:
            pdu_type, length = read_pdu_header(header)
        except PDUDecodeError as exc:
            self._lose_framing(REASON_UNRECOGNIZED_PDU, f"unrecognized PDU: {exc}")
            return None
        size = PDU_HEADER_LENGTH + length
        limit = self._pdata_limit if pdu_type == P_DATA_TF else self._association_pdu_limit
        if limit is not None and size > limit:
            self._lose_framing(
                REASON_INVALID_PARAMETER_VALUE,
                f"PDU of type 0x{pdu_type:02X} declares {size} bytes, more than the {limit} "
                "accepted",
            )
            return None
        return size

    def _lose_framing(self, reason: int, detail: str) -> None:
        self._ignore_input = True
        self._partial = bytearray()
        self._handle(_Trigger(_Evt.INVALID_PDU, reason=reason, detail=detail))

    def _dispatch(self, view: memoryview) -> None:
        on_value = self.on_data_value
        if on_value is not None and view[0] == P_DATA_TF and self._state is State.Sta6:
            # DT-2, nearly every PDU: values straight to the consumer (invalid: aborted below)
            try:
                values = pdata_values(view, len(view))
            except PDUDecodeError:
                pass
            else:
                for context_id, control, value in values:
                    on_value(context_id, control, value)
                return
        try:
            pdu = decode_pdu(view)
        except PDUDecodeError as exc:
            self._handle(
                _Trigger(
                    _Evt.INVALID_PDU,
                    reason=REASON_INVALID_PARAMETER_VALUE,
                    detail=f"invalid PDU: {exc}",
                )
            )
            return
        self._handle(_Trigger(_PDU_EVENTS[type(pdu)], pdu))

    # --- internals: actions (PS3.8 Tables 9-6 to 9-9); each returns the next state ------------

    def _ae_1(self, t: _Trigger) -> State:
        # Encoded now so that a request that cannot be sent fails before any connection is made.
        self._request_bytes = encode_pdu(_expect(t.pdu, AssociateRQ))
        self._new_connection()
        return State.Sta4

    def _ae_2(self, t: _Trigger) -> State:
        self._outgoing.append(self._request_bytes)
        return State.Sta5

    def _ae_3(self, t: _Trigger) -> State:
        self._emit(AssociateAccepted(_expect(t.pdu, AssociateAC)))
        return State.Sta6

    def _ae_4(self, t: _Trigger) -> State:
        self._emit(AssociateRejected(_expect(t.pdu, AssociateRJ)))
        self._close()
        return State.Sta1

    def _ae_5(self, t: _Trigger) -> State:
        self._new_connection()
        self._start_artim()
        return State.Sta2

    def _ae_6(self, t: _Trigger) -> State:
        self._artim_running = False
        request = _expect(t.pdu, AssociateRQ)
        if request.protocol_version & 1:
            self._emit(AssociateRequestReceived(request))
            return State.Sta3
        # Result 1 permanent, source 2 ACSE provider, reason 2 protocol version not supported.
        self._send(AssociateRJ(result=1, source=2, reason=2))
        self._start_artim()
        return State.Sta13

    def _ae_7(self, t: _Trigger) -> State:
        self._send(_expect(t.pdu, AssociateAC))
        return State.Sta6

    def _ae_8(self, t: _Trigger) -> State:
        self._send(_expect(t.pdu, AssociateRJ))
        self._start_artim()
        return State.Sta13

    def _dt_1(self, t: _Trigger) -> State:
        self._send(_expect(t.pdu, PDataTF))
        return State.Sta6

    def _dt_2(self, t: _Trigger) -> State:
        self._emit(DataReceived(_expect(t.pdu, PDataTF)))
        return State.Sta6

    def _ar_1(self, t: _Trigger) -> State:
        self._send(AReleaseRQ())
        return State.Sta7

    def _ar_2(self, t: _Trigger) -> State:
        self._emit(ReleaseRequested())
        return State.Sta8

    def _ar_3(self, t: _Trigger) -> State:
        self._emit(ReleaseConfirmed())
        self._close()
        return State.Sta1

    def _ar_4(self, t: _Trigger) -> State:
        self._send(AReleaseRP())
        self._start_artim()
        return State.Sta13

    def _ar_5(self, t: _Trigger) -> State:
        self._emit(ConnectionClosed())
        self._close()
        return State.Sta1

    def _ar_6(self, t: _Trigger) -> State:
        self._emit(DataReceived(_expect(t.pdu, PDataTF)))
        return State.Sta7

    def _ar_7(self, t: _Trigger) -> State:
        self._send(_expect(t.pdu, PDataTF))
        return State.Sta8

    def _ar_8(self, t: _Trigger) -> State:
        self._emit(ReleaseRequested(collision=True))
        return State.Sta9 if self._requestor else State.Sta10

    def _ar_9(self, t: _Trigger) -> State:
        self._send(AReleaseRP())
        return State.Sta11

    def _ar_10(self, t: _Trigger) -> State:
        self._emit(ReleaseConfirmed())
        if self._release_response_pending:
            self._release_response_pending = False
            return self._ar_4(t)
        return State.Sta12

    def _aa_1(self, t: _Trigger) -> State:
        if t.event is _Evt.ABORT_REQUEST:
            self._send(_expect(t.pdu, AAbort))
        else:
            self._provider_abort(t)
        self._start_artim()
        return State.Sta13

    def _aa_2(self, t: _Trigger) -> State:
        self._close()
        return State.Sta1

    def _aa_3(self, t: _Trigger) -> State:
        abort = _expect(t.pdu, AAbort)
        self._emit(Aborted(abort.source, abort.reason, by_peer=True, detail="A-ABORT received"))
        self._close()
        return State.Sta1

    def _aa_4(self, t: _Trigger) -> State:
        self._emit(
            Aborted(
                ABORT_SOURCE_PROVIDER,
                REASON_NOT_SPECIFIED,
                by_peer=False,
                connection_lost=True,
                detail=f"transport connection closed in state {self._state.name} "
                f"({self._state.description})",
            )
        )
        self._close()
        return State.Sta1

    def _aa_5(self, t: _Trigger) -> State:
        self._emit(ConnectionClosed())
        self._close()
        return State.Sta1

    def _aa_6(self, t: _Trigger) -> State:
        return State.Sta13

    def _aa_7(self, t: _Trigger) -> State:
        self._provider_abort(t)
        return State.Sta13

    def _aa_8(self, t: _Trigger) -> State:
        detail = self._provider_abort(t)
        self._emit(Aborted(ABORT_SOURCE_PROVIDER, t.reason, by_peer=False, detail=detail))
        self._start_artim()
        return State.Sta13


# Action "XX-n" of PS3.8 is the method _xx_n.
_ACTIONS: Final[dict[str, Callable[[AssociationStateMachine, _Trigger], State]]] = {
    action: getattr(AssociationStateMachine, "_" + action.lower().replace("-", "_"))
    for row in _TABLE.values()
    for action in row.values()
}
