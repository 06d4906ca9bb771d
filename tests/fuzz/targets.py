"""Fuzz targets: everything in aiodicom that reads bytes a peer sent.

Each target takes arbitrary ``bytes`` and raises :class:`Finding` (or lets an unexpected
exception through) when a property breaks; it returns normally otherwise. The properties:

* only aiodicom's typed errors (:class:`~aiodicom.errors.DicomError` subclasses) come out of a
  decoder, and the state machine turns every malformed input into events (never an exception);
* what the state machine sends back is always well-formed PDUs;
* feeding a stream in pieces gives the same events as feeding it whole;
* nothing hangs (each target is bounded by the input size; the socket target by timeouts).

The same functions serve the hypothesis tests (tests/test_fuzz_*.py) and the long run
(tests/fuzz/run.py, atheris). Seeds: tests/fuzz_seeds/ (tests/fuzz/capture_seeds.py).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from pathlib import Path

from aiodicom.datasets import decode_dataset
from aiodicom.dimse import decode_command
from aiodicom.errors import DicomError, LocalProtocolError
from aiodicom.fileio import peek_elements, split_part10
from aiodicom.pdu import (
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
)
from aiodicom.reassembly import MessageAssembler
from aiodicom.statemachine import (
    AssociateRequestReceived,
    AssociationStateMachine,
    DataReceived,
    Event,
    ReleaseRequested,
)

SEEDS = Path(__file__).resolve().parent.parent / "fuzz_seeds"
MAX_PDU_LENGTH = 16384

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
SYNTAXES = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED)
# What the receive path peeks at: routing (Study/Series/SOP Instance UIDs), sinks, the store.
PEEKED_TAGS = (0x00080005, 0x00080016, 0x00080018, 0x00100020, 0x0020000D, 0x0020000E)


class Finding(AssertionError):
    """A property of a target does not hold for this input."""


def seed_files(kind: str) -> list[Path]:
    """The seed files of one kind: ``pdu``, ``stream``, ``command`` or ``dataset``."""
    return sorted((SEEDS / kind).glob("*.bin"))


def seeds(kind: str) -> list[bytes]:
    return [path.read_bytes() for path in seed_files(kind)]


# --- PDU decoder -------------------------------------------------------------------------------


def pdu_target(data: bytes) -> None:
    """decode_pdu: a PDUDecodeError or a PDU; a decoded PDU encodes back to what decodes equal."""
    try:
        pdu = decode_pdu(data)
    except DicomError:
        return
    try:
        again = encode_pdu(pdu)
    except ValueError:
        # The decoder reads some text leniently (a non-ASCII implementation version name) that
        # the encoder, made for our own values, refuses: where the acceptor echoes a peer's
        # value back, the acceptor target shows what happens.
        return
    if decode_pdu(again) != pdu:
        raise Finding(f"{type(pdu).__name__} does not survive encode/decode")


# --- the state machine -------------------------------------------------------------------------

_USER_INFORMATION = UserInformation(max_pdu_length=MAX_PDU_LENGTH, implementation_class_uid="1.2.3")
_RQ = AssociateRQ(
    called_ae_title="ANY-SCP", calling_ae_title="FUZZ",
    presentation_contexts=(PresentationContextRQ(1, "1.2.840.10008.1.1", (IMPLICIT_LE,)),),
    user_information=_USER_INFORMATION,
)
_AC = AssociateAC(
    called_ae_title="ANY-SCP", calling_ae_title="FUZZ",
    presentation_contexts=(PresentationContextAC(1, 0, IMPLICIT_LE),),
    user_information=_USER_INFORMATION,
)
_RJ = AssociateRJ(1, 1, 1)
_ECHO_RSP = PDataTF((PresentationDataValue(1, True, True, b"\x00" * 8),))


def _check_output(sm: AssociationStateMachine) -> None:
    out = sm.data_to_send()
    position = 0
    while position < len(out):
        length = int.from_bytes(out[position + 2 : position + 6], "big")
        try:
            decode_pdu(out[position : position + 6 + length])
        except DicomError as exc:
            raise Finding(f"the state machine sent a malformed PDU: {exc}") from exc
        position += 6 + length


def _started(requestor: bool) -> AssociationStateMachine:
    sm = AssociationStateMachine(requestor=requestor, max_pdu_length=MAX_PDU_LENGTH)
    if requestor:
        sm.request_association(_RQ)
    sm.connection_made()
    _check_output(sm)
    return sm


def _receive(sm: AssociationStateMachine, data: bytes) -> list[Event]:
    try:
        return sm.receive_data(data)
    except LocalProtocolError:
        # Bytes after our side closed or before a connection: the transport would not pass
        # them, and the machine says so with its typed error.
        return []


def _react(sm: AssociationStateMachine, events: list[Event], answer: int) -> None:
    """What a user does with each event: accept or reject, answer a release, send data."""
    for event in events:
        try:
            if isinstance(event, AssociateRequestReceived):
                sm.accept(_AC) if answer & 1 else sm.reject(_RJ)
            elif isinstance(event, ReleaseRequested):
                sm.release_response()
            elif isinstance(event, DataReceived) and answer & 2:
                sm.send_data(_ECHO_RSP)
        except LocalProtocolError:
            pass  # the table does not allow it in this state: typed, and our caller's mistake
        _check_output(sm)


def statemachine_target(data: bytes) -> None:
    """Byte 0 picks the side, how to react and the chunk size; the rest is the peer's stream.

    Fed passively whole and in chunks (same events), then reactively in chunks with user
    primitives interleaved (accept/reject, release response, data, release, abort, ARTIM),
    checking that everything the machine sends is a well-formed PDU.
    """
    if not data:
        return
    control, stream = data[0], data[1:]
    requestor = bool(control & 1)
    chunk = ((control >> 3) + 1) ** 2
    whole = _started(requestor)
    whole_events = [type(e).__name__ for e in _receive(whole, stream)]
    _check_output(whole)
    pieces = _started(requestor)
    piece_events: list[str] = []
    for start in range(0, len(stream), max(chunk, 64)):
        piece = stream[start : start + max(chunk, 64)]
        piece_events += [type(e).__name__ for e in _receive(pieces, piece)]
        _check_output(pieces)
    if whole_events != piece_events or whole.state is not pieces.state:
        raise Finding(
            f"events differ whole vs in chunks of {chunk}: {whole_events} != {piece_events}"
        )
    sm = _started(requestor)
    answer = control >> 1
    for n, start in enumerate(range(0, len(stream), chunk)):
        _react(sm, _receive(sm, stream[start : start + chunk]), answer)
        if n % 7 == 6 and answer & 2:
            with contextlib.suppress(LocalProtocolError):
                sm.release() if answer & 1 else sm.abort()
            _check_output(sm)
        if n % 11 == 10:
            _react(sm, sm.artim_expired(), answer)
    _react(sm, sm.connection_closed(), answer)
    if sm.state.name != "Sta1" and not sm.should_close:
        raise Finding(f"connection closed but the machine is in {sm.state.name}")


_PEER_PDUS = tuple(encode_pdu(p) for p in (
    _RQ, _AC, _RJ, _ECHO_RSP, AReleaseRQ(), AReleaseRP(), AAbort(0, 0), AAbort(2, 6),
))


def _primitive(sm: AssociationStateMachine, op: int, arg: int) -> list[Event]:
    """One user primitive or transport event, chosen by ``op``."""
    actions: tuple[Callable[[], object], ...] = (
        sm.connection_made,
        lambda: sm.request_association(_RQ),
        lambda: sm.accept(_AC),
        lambda: sm.reject(_RJ),
        lambda: sm.send_data(_ECHO_RSP),
        sm.release,
        sm.release_response,
        lambda: sm.abort(arg & 2, arg & 7),
        sm.connection_closed,
        sm.artim_expired,
        lambda: sm.receive_data(_PEER_PDUS[arg % len(_PEER_PDUS)]),
        lambda: sm.receive_data(_PEER_PDUS[arg % len(_PEER_PDUS)][: arg % 11]),
    )
    result = actions[op % len(actions)]()
    return result if isinstance(result, list) else []


def event_sequence_target(data: bytes) -> None:
    """Arbitrary sequences of user primitives and transport events (byte pairs: what, how):
    only LocalProtocolError for a primitive the state does not allow, only well-formed PDUs
    sent, and a closed transport always brings the machine back to Sta1."""
    if not data:
        return
    sm = AssociationStateMachine(requestor=bool(data[0] & 1), max_pdu_length=MAX_PDU_LENGTH)
    for op, arg in zip(data[1::2], data[2::2], strict=False):
        with contextlib.suppress(LocalProtocolError):
            _primitive(sm, op, arg)
        _check_output(sm)
        if sm.should_close:
            sm.connection_closed()
            if sm.state.name != "Sta1":
                raise Finding(f"closed transport but the machine is in {sm.state.name}")


# --- DIMSE -------------------------------------------------------------------------------------


def command_target(data: bytes) -> None:
    """decode_command: a dict or a CommandDecodeError."""
    try:
        decode_command(data)
    except DicomError:
        return


# Fragments a peer might send before its command ends: the 'last' bit is what ends a command
# set, and an unbounded one is the `limits` helper's symptom (issue 14, "Unbounded message
# assembly: command fragments without the last bit grow without limit"). The target's input
# is bounded, so it cannot show that growth; it checks the typed errors only.
def reassembly_target(data: bytes) -> None:
    """MessageAssembler over PDVs read from ``data``: [context, flags, length, value...]*."""
    assembler = MessageAssembler()
    position = 0
    try:
        while position + 3 <= len(data):
            context, flags, length = data[position], data[position + 1], data[position + 2]
            value = data[position + 3 : position + 3 + length]
            position += 3 + length
            pdv = PresentationDataValue(context, bool(flags & 1), bool(flags & 2), value)
            for message in assembler.feed(PDataTF((pdv,))):
                if message.data is not None:
                    bytes(memoryview(message.data))
                message.command_field  # noqa: B018 - reading it must not raise
    except DicomError:
        assembler.abandon()


def command_and_reassembly_target(data: bytes) -> None:
    command_target(data)
    reassembly_target(data)


# --- data sets ---------------------------------------------------------------------------------


def dataset_target(data: bytes) -> None:
    """peek_elements in every encoding, decode_dataset, split_part10: typed errors only."""
    for syntax in SYNTAXES:
        source = data
        if syntax == DEFLATED:
            # Deflate what we got: the inflater then reaches the scanner's interesting paths
            # (an undeflatable stream is one quick error, also tried with the raw bytes).
            source = _deflated(data)
            with contextlib.suppress(DicomError):
                peek_elements(data, syntax, PEEKED_TAGS)
        with contextlib.suppress(DicomError):
            peek_elements(source, syntax, PEEKED_TAGS)
        with contextlib.suppress(DicomError):
            decode_dataset(source, syntax)
    with contextlib.suppress(DicomError):
        split_part10(data)


def _deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "pdu": pdu_target,
    "statemachine": statemachine_target,
    "events": event_sequence_target,
    "dimse": command_and_reassembly_target,
    "dataset": dataset_target,
}
SEED_KINDS = {"pdu": "pdu", "statemachine": "stream", "events": "stream", "dimse": "command",
              "dataset": "dataset"}
