"""DIMSE messages (PS3.7): the command set codec and message fragmentation (reassembly of
received messages: :mod:`aiodicom.reassembly`).

Pure code, no I/O. A DIMSE message is a command set, always encoded in Implicit VR Little Endian
whatever the presentation context says, optionally followed by a data set encoded in the context's
transfer syntax. The command set codec here is hand-written rather than built on pydicom because
it runs once per C-FIND match and pydicom's generic machinery costs an order of magnitude more.

Command sets are plain dicts keyed by the PS3.7 keyword (``"MessageID"``, ``"Status"``, ...).
Values are ``int`` for US/UL, ``str`` for UI/AE/LO/SH/LT and ``list[int]`` for AT (each value is
``group << 16 | element``). Group-0000 elements this module does not know are kept as raw
``bytes`` under the key ``"(0000,xxxx)"`` (upper-case hex), and are written back as they came.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Protocol

import attrs

from aiodicom.errors import DimseError
from aiodicom.pdu import PDataTF, PresentationDataValue, pdata_header
from aiodicom.status import Status

__all__ = [
    "COMMAND_ELEMENTS",
    "C_CANCEL_RQ",
    "C_ECHO_RQ",
    "C_ECHO_RSP",
    "C_FIND_RQ",
    "C_FIND_RSP",
    "C_GET_RQ",
    "C_GET_RSP",
    "C_MOVE_RQ",
    "C_MOVE_RSP",
    "C_STORE_RQ",
    "C_STORE_RSP",
    "DATASET_PRESENT",
    "DEFAULT_MAX_FRAGMENT",
    "NO_DATASET",
    "N_ACTION_RQ",
    "N_ACTION_RSP",
    "N_CREATE_RQ",
    "N_CREATE_RSP",
    "N_DELETE_RQ",
    "N_DELETE_RSP",
    "N_EVENT_REPORT_RQ",
    "N_EVENT_REPORT_RSP",
    "N_GET_RQ",
    "N_GET_RSP",
    "N_SET_RQ",
    "N_SET_RSP",
    "PDV_OVERHEAD",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_MEDIUM",
    "WRITE_SIZE",
    "CommandDecodeError",
    "DataSetWriter",
    "DimseMessage",
    "command_name",
    "decode_command",
    "encode_command",
    "encode_message",
    "encode_short_message",
    "encode_store_response",
    "fragment_message",
]

# --- constants ----------------------------------------------------------------------------------

# Command Field values (PS3.7 section 9.3 and 10.3, Annex E)
C_STORE_RQ = 0x0001
C_GET_RQ = 0x0010
C_FIND_RQ = 0x0020
C_MOVE_RQ = 0x0021
C_ECHO_RQ = 0x0030
N_EVENT_REPORT_RQ = 0x0100
N_GET_RQ = 0x0110
N_SET_RQ = 0x0120
N_ACTION_RQ = 0x0130
N_CREATE_RQ = 0x0140
N_DELETE_RQ = 0x0150
C_CANCEL_RQ = 0x0FFF

_RESPONSE_BIT = 0x8000
C_STORE_RSP = C_STORE_RQ | _RESPONSE_BIT
C_GET_RSP = C_GET_RQ | _RESPONSE_BIT
C_FIND_RSP = C_FIND_RQ | _RESPONSE_BIT
C_MOVE_RSP = C_MOVE_RQ | _RESPONSE_BIT
C_ECHO_RSP = C_ECHO_RQ | _RESPONSE_BIT
N_EVENT_REPORT_RSP = N_EVENT_REPORT_RQ | _RESPONSE_BIT
N_GET_RSP = N_GET_RQ | _RESPONSE_BIT
N_SET_RSP = N_SET_RQ | _RESPONSE_BIT
N_ACTION_RSP = N_ACTION_RQ | _RESPONSE_BIT
N_CREATE_RSP = N_CREATE_RQ | _RESPONSE_BIT
N_DELETE_RSP = N_DELETE_RQ | _RESPONSE_BIT

_COMMAND_NAMES = {
    C_STORE_RQ: "C-STORE-RQ",
    C_GET_RQ: "C-GET-RQ",
    C_FIND_RQ: "C-FIND-RQ",
    C_MOVE_RQ: "C-MOVE-RQ",
    C_ECHO_RQ: "C-ECHO-RQ",
    N_EVENT_REPORT_RQ: "N-EVENT-REPORT-RQ",
    N_GET_RQ: "N-GET-RQ",
    N_SET_RQ: "N-SET-RQ",
    N_ACTION_RQ: "N-ACTION-RQ",
    N_CREATE_RQ: "N-CREATE-RQ",
    N_DELETE_RQ: "N-DELETE-RQ",
    C_CANCEL_RQ: "C-CANCEL-RQ",
}
_COMMAND_NAMES.update(
    {code | _RESPONSE_BIT: name[:-2] + "RSP" for code, name in list(_COMMAND_NAMES.items())}
)
del _COMMAND_NAMES[C_CANCEL_RQ | _RESPONSE_BIT]  # C-CANCEL has no response

# Command Data Set Type (0000,0800): 0x0101 means "no data set"; the standard allows any other
# value for "present", and 0x0001 is what most implementations send.
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001

# Priority (0000,0700)
PRIORITY_MEDIUM = 0x0000
PRIORITY_HIGH = 0x0001
PRIORITY_LOW = 0x0002

# Each PDV item costs 4 bytes of item length, 1 of presentation context ID and 1 of message
# control header on top of its fragment, all counted in the peer's maximum PDU length.
PDV_OVERHEAD = 6

# What encode_message puts in one write at most (unless a single PDU is larger): small messages
# go out whole in one send; large ones in pieces of this size, so that a data set is never
# copied whole into one buffer, and the transport's back-pressure is felt between pieces.
WRITE_SIZE = 1 << 18

# PDU header (6) and PDV item header (6) of a P-DATA-TF PDU holding one PDV.
_PDU_OVERHEAD = 12

# The cap on a fragment when the peer announces no limit (maximum length 0): big enough that the
# per-PDU cost vanishes, small enough that neither side buffers unbounded amounts per PDU.
DEFAULT_MAX_FRAGMENT = 1 << 20

# (keyword, element number in group 0000, VR). The VR decides how the value is (de)coded.
COMMAND_ELEMENTS: tuple[tuple[str, int, str], ...] = (
    ("CommandGroupLength", 0x0000, "UL"),
    ("AffectedSOPClassUID", 0x0002, "UI"),
    ("RequestedSOPClassUID", 0x0003, "UI"),
    ("CommandField", 0x0100, "US"),
    ("MessageID", 0x0110, "US"),
    ("MessageIDBeingRespondedTo", 0x0120, "US"),
    ("MoveDestination", 0x0600, "AE"),
    ("Priority", 0x0700, "US"),
    ("CommandDataSetType", 0x0800, "US"),
    ("Status", 0x0900, "US"),
    ("OffendingElement", 0x0901, "AT"),
    ("ErrorComment", 0x0902, "LO"),
    ("ErrorID", 0x0903, "US"),
    ("AffectedSOPInstanceUID", 0x1000, "UI"),
    ("RequestedSOPInstanceUID", 0x1001, "UI"),
    ("EventTypeID", 0x1002, "US"),
    ("AttributeIdentifierList", 0x1005, "AT"),
    ("ActionTypeID", 0x1008, "US"),
    ("NumberOfRemainingSuboperations", 0x1020, "US"),
    ("NumberOfCompletedSuboperations", 0x1021, "US"),
    ("NumberOfFailedSuboperations", 0x1022, "US"),
    ("NumberOfWarningSuboperations", 0x1023, "US"),
    ("MoveOriginatorApplicationEntityTitle", 0x1030, "AE"),
    ("MoveOriginatorMessageID", 0x1031, "US"),
)

_BY_KEYWORD: dict[str, tuple[int, str]] = {kw: (el, vr) for kw, el, vr in COMMAND_ELEMENTS}
_BY_ELEMENT: dict[int, tuple[str, str]] = {el: (kw, vr) for kw, el, vr in COMMAND_ELEMENTS}

# Implicit VR Little Endian element header: group, element, 32-bit value length.
_HEADER = struct.Struct("<HHI")
_US_ELEMENT = struct.Struct("<HHIH")
_UL_ELEMENT = struct.Struct("<HHII")
_US_VALUE = struct.Struct("<H")
_UL_VALUE = struct.Struct("<I")
_TAG = struct.Struct("<HH")


class CommandDecodeError(DimseError):
    """A command set is not well-formed; ``offset`` is where in the command set it went wrong."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset} of the command set)")
        self.reason = message
        self.offset = offset


def command_name(command_field: int) -> str:
    """``"C-FIND-RQ"`` for 0x0020 etc.; ``"command 0x1234"`` for values PS3.7 does not define."""
    return _COMMAND_NAMES.get(command_field, f"command 0x{command_field:04X}")


# --- command set encoding -----------------------------------------------------------------------


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _raw_key(element: int) -> str:
    return f"(0000,{element:04X})"


def _parse_raw_key(key: str) -> int | None:
    if len(key) == 11 and key.startswith("(0000,") and key.endswith(")"):
        digits = key[6:10]
        if all(c in _HEX_DIGITS for c in digits):
            return int(digits, 16)
    return None


def _text(value: object, keyword: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{keyword} must be a str, not {type(value).__name__}")
    # Command sets use the default repertoire only: never fail on an exotic character in an
    # error comment, send "?" instead.
    return value.encode("ascii", "replace")


def _encode_element(keyword: str, element: int, vr: str, value: object) -> bytes:
    if vr == "US" or vr == "UL":
        if not isinstance(value, int):
            raise TypeError(f"{keyword} must be an int, not {type(value).__name__}")
        packer = _US_ELEMENT if vr == "US" else _UL_ELEMENT
        try:
            return packer.pack(0, element, packer.size - 8, value)
        except struct.error:
            raise ValueError(f"{keyword} value {value} does not fit in {vr}") from None
    if vr == "UI":
        raw = _text(value, keyword)
        if len(raw) & 1:
            raw += b"\x00"
    elif vr == "AT":
        values = [value] if isinstance(value, int) else value
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{keyword} must be an int or a list of int")
        try:
            raw = b"".join(_TAG.pack(tag >> 16, tag & 0xFFFF) for tag in values)
        except (struct.error, TypeError):
            raise ValueError(f"{keyword} values must be 32-bit tags") from None
    elif vr == "RAW":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{keyword} of an unknown element must be bytes")
        raw = bytes(value)
    else:  # AE, LO, SH, LT: space padded
        raw = _text(value, keyword)
        if vr == "LO" and len(raw) > 64:
            # An SCP's error comment is often an exception message; the LO limit of 64
            # characters matters more than the tail of the text.
            raw = raw[:64]
        if len(raw) & 1:
            raw += b" "
    return _HEADER.pack(0, element, len(raw)) + raw


def encode_command(fields: Mapping[str, object]) -> bytes:
    """Encode a command set: Implicit VR Little Endian, Command Group Length first, tag order.

    A ``CommandGroupLength`` key is ignored (the length is always computed); a value of ``None``
    leaves the element out; text is sent as ASCII (other characters become ``?``) and an
    ``ErrorComment`` is cut to the 64 characters LO allows. Unknown keywords raise
    :class:`ValueError`, wrong value types :class:`TypeError`.
    """
    encoded: list[tuple[int, bytes]] = []
    for keyword, value in fields.items():
        if value is None:
            continue
        spec = _BY_KEYWORD.get(keyword)
        if spec is not None:
            element, vr = spec
        else:
            raw_element = _parse_raw_key(keyword)
            if raw_element is None:
                raise ValueError(f"unknown command element keyword {keyword!r}")
            element = raw_element
            # A known element spelled as a tag is encoded like its keyword.
            keyword, vr = _BY_ELEMENT.get(element, (keyword, "RAW"))
        if element == 0x0000:
            continue
        encoded.append((element, _encode_element(keyword, element, vr, value)))
    encoded.sort(key=lambda item: item[0])
    body = b"".join(item[1] for item in encoded)
    return _UL_ELEMENT.pack(0, 0, 4, len(body)) + body


# Every other element of a C-STORE-RSP: Command Field, Message ID Being Responded To, Command Data
# Set Type, Status, each (group, element, length, value).
_STORE_RSP_MIDDLE = struct.Struct("<HHIHHHIHHHIHHHIH")


def _uid_value(value: str, keyword: str) -> bytes:
    raw = _text(value, keyword)
    return raw + b"\x00" if len(raw) & 1 else raw


def encode_store_response(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int
) -> bytes:
    """The command set of a C-STORE-RSP, as :func:`encode_command` encodes it, in a fraction of
    its time: a storage SCP sends one per instance it receives."""
    sop_class = _uid_value(sop_class_uid, "AffectedSOPClassUID")
    sop_instance = _uid_value(sop_instance_uid, "AffectedSOPInstanceUID")
    try:
        middle = _STORE_RSP_MIDDLE.pack(
            0, 0x0100, 2, C_STORE_RSP, 0, 0x0120, 2, message_id,
            0, 0x0800, 2, NO_DATASET, 0, 0x0900, 2, status,
        )
    except struct.error:
        raise ValueError(
            f"Message ID {message_id} or status {status} does not fit in US"
        ) from None
    length = 2 * _HEADER.size + len(sop_class) + len(middle) + len(sop_instance)
    return b"".join((
        _UL_ELEMENT.pack(0, 0, 4, length),
        _HEADER.pack(0, 0x0002, len(sop_class)), sop_class,
        middle,
        _HEADER.pack(0, 0x1000, len(sop_instance)), sop_instance,
    ))


# --- command set decoding -----------------------------------------------------------------------


def _decode_text(raw: bytes | memoryview) -> str:
    return str(raw, "utf-8", "replace")


def decode_command(data: bytes | bytearray | memoryview) -> dict[str, object]:
    """Decode a whole command set into a dict keyed by keyword.

    Lenient where peers are known to stray: the Command Group Length is not checked and not
    returned, elements may come in any order, the first of duplicated elements wins (as in
    DCMTK), unknown group-0000 elements are kept raw. Anything that breaks the framing (a truncated
    header or value, another group, undefined length, a value of impossible size) raises
    :class:`CommandDecodeError`.
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    result: dict[str, object] = {}
    offset = 0
    unpack_header = _HEADER.unpack_from
    unpack_us = _US_VALUE.unpack_from
    while offset < size:
        if size - offset < 8:
            raise CommandDecodeError(
                f"truncated element header ({size - offset} bytes left)", offset
            )
        group, element, length = unpack_header(view, offset)
        if group != 0x0000:
            raise CommandDecodeError(
                f"element ({group:04X},{element:04X}) is not in command group 0000", offset
            )
        start = offset + 8
        end = start + length
        if length == 0xFFFFFFFF:
            raise CommandDecodeError(f"element (0000,{element:04X}) has undefined length", offset)
        if end > size:
            raise CommandDecodeError(
                f"element (0000,{element:04X}) value of length {length} runs past the end "
                f"of the command set ({size} bytes)",
                offset,
            )
        spec = _BY_ELEMENT.get(element)
        if spec is None:
            key = _raw_key(element)
            if key not in result:
                result[key] = bytes(view[start:end])
        else:
            keyword, vr = spec
            if keyword not in result and element != 0x0000:
                # US and UI make up nearly every command set: decoded here, without a call
                # per element (two command sets per C-GET sub-operation); the rest, and a US
                # of the wrong length, go through _decode_value and its checks.
                if vr == "US" and length == 2:
                    result[keyword] = unpack_us(view, start)[0]
                elif vr == "UI":
                    result[keyword] = str(view[start:end], "utf-8", "replace").rstrip("\x00 ")
                else:
                    result[keyword] = _decode_value(view, start, length, keyword, vr, offset)
        offset = end
    return result


def _decode_value(
    view: memoryview, start: int, length: int, keyword: str, vr: str, offset: int
) -> object:
    if vr == "US":
        if length == 2:
            return _US_VALUE.unpack_from(view, start)[0]
        if length == 0:
            return None
        raise CommandDecodeError(f"{keyword} (US) has length {length}, expected 2", offset)
    if vr == "UI":
        return _decode_text(view[start : start + length]).rstrip("\x00 ")
    if vr == "AT":
        if length % 4:
            raise CommandDecodeError(
                f"{keyword} (AT) has length {length}, not a multiple of 4", offset
            )
        values = _TAG.iter_unpack(view[start : start + length])
        return [(group << 16) | element for group, element in values]
    if vr == "UL":
        if length == 4:
            return _UL_VALUE.unpack_from(view, start)[0]
        if length == 0:
            return None
        raise CommandDecodeError(f"{keyword} (UL) has length {length}, expected 4", offset)
    # AE, LO, SH, LT: leading and trailing spaces are not significant; some peers pad with NUL.
    return _decode_text(view[start : start + length]).strip("\x00 ")


# --- messages -----------------------------------------------------------------------------------


@attrs.define
class DimseMessage:
    """One DIMSE message on one presentation context.

    ``data`` holds the data set bytes exactly as they travel, encoded in the context's transfer
    syntax (see :mod:`aiodicom.datasets`); ``None`` when the message has no data set.
    """

    context_id: int
    command: dict[str, object]
    data: bytes | memoryview | None = None
    # The writer that received the data set, when a layer above chose one for it (see
    # MessageAssembler): lets that layer find again what it set up, e.g. a file spooled to disk.
    writer: DataSetWriter | None = attrs.field(default=None, eq=False, repr=False)
    # The command set already encoded, by a sender that does so faster than encode_command (a
    # C-STORE-RSP, one per instance received): sent as it is, so it must say what ``command``
    # says.
    encoded_command: bytes | None = attrs.field(default=None, eq=False, repr=False)

    def _int(self, keyword: str) -> int | None:
        value = self.command.get(keyword)
        return value if isinstance(value, int) else None

    @property
    def command_field(self) -> int:
        value = self._int("CommandField")
        if value is None:
            raise DimseError("the command set has no Command Field (0000,0100)")
        return value

    @property
    def name(self) -> str:
        """``"C-FIND-RSP"`` and the like, for logs and error messages."""
        value = self._int("CommandField")
        return "command without Command Field" if value is None else command_name(value)

    @property
    def message_id(self) -> int | None:
        return self._int("MessageID")

    @property
    def message_id_being_responded_to(self) -> int | None:
        return self._int("MessageIDBeingRespondedTo")

    @property
    def status(self) -> int | None:
        return self._int("Status")

    @property
    def status_code(self) -> int:
        """Status, with a response that lacks one counted as a failure (unable to process)."""
        value = self._int("Status")
        return Status.UNABLE_TO_PROCESS if value is None else value

    @property
    def has_dataset(self) -> bool:
        """What the command set says: Command Data Set Type present and not 0x0101."""
        value = self._int("CommandDataSetType")
        return value is not None and value != NO_DATASET

    @property
    def is_request(self) -> bool:
        return not self.command_field & _RESPONSE_BIT

    @property
    def is_response(self) -> bool:
        return bool(self.command_field & _RESPONSE_BIT)


# --- fragmentation ------------------------------------------------------------------------------


def fragment_message(msg: DimseMessage, max_pdu_length: int) -> Iterator[PDataTF]:
    """Split ``msg`` into P-DATA-TF PDUs of one PDV each: command fragments, then data fragments.

    ``max_pdu_length`` is the peer's Maximum Length Received (PS3.8 D.1), which bounds the
    variable field of a P-DATA-TF PDU, i.e. the PDV items including their 6-byte item headers;
    0 means no limit, in which case fragments are capped at :data:`DEFAULT_MAX_FRAGMENT`.

    When the command has no ``CommandDataSetType`` it is filled in from ``msg.data``; when it has
    one that contradicts ``msg.data``, :class:`ValueError` is raised. Data fragments are
    memoryview slices of ``msg.data``: nothing is copied until the PDU is encoded.
    """
    fragment_size = _fragment_size(max_pdu_length)
    encoded = _command_bytes(msg)
    context_id = msg.context_id
    yield from _fragments(context_id, encoded, fragment_size, True)
    if msg.data is not None:
        yield from _fragments(context_id, msg.data, fragment_size, False)


def encode_short_message(msg: DimseMessage, max_pdu_length: int) -> bytes | None:
    """A message without a data set whose command set, already encoded, fits one PDU: that
    PDU, as :func:`encode_message` makes it; ``None`` for any other message.

    Every response a storage SCP sends is one: this spares it the generator per response.
    """
    encoded = msg.encoded_command
    if msg.data is not None or encoded is None:
        return None
    size = len(encoded)
    # _fragment_size's value wherever it has one (0 and above PDV_OVERHEAD), but not a call to
    # it: for a max_pdu_length from 1 to PDV_OVERHEAD (or negative) it raises DimseError, where
    # this declines (None) and leaves encode_message to raise it; an empty encoded command at
    # max_pdu_length == PDV_OVERHEAD still gets its one empty PDV here.
    limit = DEFAULT_MAX_FRAGMENT if max_pdu_length == 0 else max_pdu_length - PDV_OVERHEAD
    if size > limit:
        return None
    return pdata_header(msg.context_id, True, True, size) + encoded


def encode_message(
    msg: DimseMessage, max_pdu_length: int, write_size: int = WRITE_SIZE
) -> Iterator[bytes]:
    """``msg`` as encoded P-DATA-TF PDUs, split as :func:`fragment_message` splits it, grouped
    into writes: each bytes object holds whole PDUs, as many as fit in ``write_size`` (at least
    one). A message up to ``write_size`` therefore comes as one write: the command and its data
    set in one send, and nothing another message could come between.

    Errors in the command (see :func:`encode_command`) are raised before the first write.
    """
    fragment_size = _fragment_size(max_pdu_length)
    command = _command_bytes(msg)
    context_id = msg.context_id
    data = msg.data
    pending: list[bytes | memoryview] = []
    pending_size = 0
    for payload, is_command in ((command, True), (data, False)):
        if payload is None:
            continue
        view = memoryview(payload)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = view.nbytes
        start = 0
        while True:
            end = min(start + fragment_size, size)
            fragment = view[start:end] if start or end < size else payload
            if pending and pending_size + end - start + _PDU_OVERHEAD > write_size:
                yield b"".join(pending)
                pending = []
                pending_size = 0
            pending.append(pdata_header(context_id, is_command, end >= size, end - start))
            pending.append(fragment)
            pending_size += end - start + _PDU_OVERHEAD
            start = end
            if start >= size:  # an empty data set still gets its one (empty, last) fragment
                break
    yield b"".join(pending)


def _fragment_size(max_pdu_length: int) -> int:
    if max_pdu_length == 0:
        return DEFAULT_MAX_FRAGMENT
    if max_pdu_length <= PDV_OVERHEAD:
        raise DimseError(
            f"a maximum PDU length of {max_pdu_length} leaves no room for any data "
            f"(each PDV costs {PDV_OVERHEAD} bytes)"
        )
    return max_pdu_length - PDV_OVERHEAD


def _command_bytes(msg: DimseMessage) -> bytes:
    encoded = msg.encoded_command
    if encoded is None:
        encoded = encode_command(_with_data_set_type(msg))
    return encoded


def _with_data_set_type(msg: DimseMessage) -> Mapping[str, object]:
    command = msg.command
    data_set_type = command.get("CommandDataSetType")
    if data_set_type is None:
        command = dict(command)
        command["CommandDataSetType"] = NO_DATASET if msg.data is None else DATASET_PRESENT
    elif isinstance(data_set_type, int) and (data_set_type == NO_DATASET) != (msg.data is None):
        state = "no data set" if data_set_type == NO_DATASET else "a data set"
        raise ValueError(
            f"CommandDataSetType 0x{data_set_type:04X} says {state}, "
            f"but the message {'has' if msg.data is not None else 'has no'} data"
        )
    return command


def _fragments(
    context_id: int, payload: bytes | memoryview, fragment_size: int, is_command: bool
) -> Iterator[PDataTF]:
    size = len(payload)
    if size <= fragment_size:
        # Also covers an empty data set: one empty last fragment still marks its presence.
        yield PDataTF((PresentationDataValue(context_id, is_command, True, payload),))
        return
    view = memoryview(payload)
    for start in range(0, size, fragment_size):
        end = start + fragment_size
        yield PDataTF(
            (PresentationDataValue(context_id, is_command, end >= size, view[start:end]),)
        )


class DataSetWriter(Protocol):
    """Receives the fragments of one data set as they arrive, then says what the message holds.

    ``write`` gets views of the receive buffer that are only valid during the call: whatever is
    kept must be copied (or written out) before it returns. A writer that also has a
    ``flush()`` method may keep the views instead, until its ``flush()``: the assembler calls
    it once the PDUs of one read are handled, before the buffer is read into again (and
    ``close`` is called after the last fragment, so it flushes what is left). A file writer
    then writes the fragments of one read in one system call, which costs the kernel less per
    byte than several smaller writes.
    """

    def write(self, fragment: memoryview) -> None: ...

    def close(self) -> bytes | memoryview:
        """All fragments arrived: the data set bytes for :attr:`DimseMessage.data`."""
        ...

    def discard(self) -> None:
        """The message will never complete (the association ended): free what was kept."""
        ...
