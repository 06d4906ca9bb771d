"""DIMSE messages (PS3.7): the command set codec, message fragmentation and reassembly.

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
from collections.abc import Callable, Container, Iterator, Mapping
from typing import Protocol

import attrs

from aiodicom.errors import DimseError
from aiodicom.pdu import PDataTF, PresentationDataValue
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
    "CommandDecodeError",
    "DataSetOpener",
    "DataSetWriter",
    "DimseMessage",
    "MemoryWriter",
    "MessageAssembler",
    "command_name",
    "decode_command",
    "encode_command",
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
    if max_pdu_length == 0:
        fragment_size = DEFAULT_MAX_FRAGMENT
    elif max_pdu_length <= PDV_OVERHEAD:
        raise DimseError(
            f"a maximum PDU length of {max_pdu_length} leaves no room for any data "
            f"(each PDV costs {PDV_OVERHEAD} bytes)"
        )
    else:
        fragment_size = max_pdu_length - PDV_OVERHEAD

    encoded = msg.encoded_command
    if encoded is None:
        encoded = encode_command(_with_data_set_type(msg))
    context_id = msg.context_id
    yield from _fragments(context_id, encoded, fragment_size, True)
    if msg.data is not None:
        yield from _fragments(context_id, msg.data, fragment_size, False)


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


# --- reassembly ---------------------------------------------------------------------------------


class DataSetWriter(Protocol):
    """Receives the fragments of one data set as they arrive, then says what the message holds.

    ``write`` gets views of the receive buffer that are only valid during the call: whatever is
    kept must be copied (or written out) before it returns.
    """

    def write(self, fragment: memoryview) -> None: ...

    def close(self) -> bytes | memoryview:
        """All fragments arrived: the data set bytes for :attr:`DimseMessage.data`."""
        ...

    def discard(self) -> None:
        """The message will never complete (the association ended): free what was kept."""
        ...


DataSetOpener = Callable[[int, dict[str, object]], "DataSetWriter | None"]
"""Chooses a writer for the data set that follows a command (context ID, command); ``None``
keeps it in memory."""


class MemoryWriter:
    """The default: fragments copied once, into one buffer that grows in place."""

    __slots__ = ("_buffer", "_whole")

    def __init__(self) -> None:
        self._buffer: bytearray | None = None
        self._whole: bytes | None = None

    def write(self, fragment: memoryview) -> None:
        if self._buffer is None:
            self._buffer = bytearray(fragment)
        else:
            self._buffer += fragment

    def write_last(self, fragment: memoryview) -> None:
        """The last fragment; when it is also the first (a C-FIND identifier, a small C-STORE),
        the data set becomes immutable ``bytes`` in its one copy, which is what pydicom's
        values need anyway."""
        if self._buffer is None:
            self._whole = bytes(fragment)
        else:
            self._buffer += fragment

    def close(self) -> bytes | memoryview:
        whole, buffer = self._whole, self._buffer
        self._whole = self._buffer = None
        if whole is not None:
            return whole
        if buffer is None:
            return b""
        # Read-only, so that a data set handed to several consumers cannot be changed by one.
        return memoryview(buffer).toreadonly()

    def discard(self) -> None:
        self._whole = self._buffer = None


class MessageAssembler:
    """Reassembles DIMSE messages from the PDVs of received P-DATA-TF PDUs.

    Messages are not interleaved (PS3.8 Annex E): a message's command fragments come first, then,
    if the command says so, its data set fragments, all on one presentation context, and only
    then the next message. Violations raise :class:`DimseError`; the assembler is not usable
    afterwards (the association should be aborted).

    PDV values are views of a reused receive buffer, valid only while :meth:`feed` runs: command
    fragments are copied, data set fragments go to a :class:`DataSetWriter` as they arrive
    (``open_data`` may choose one per message, for example a file for a large C-STORE), so a
    data set is copied once, or not at all when written straight to disk.
    """

    def __init__(self, open_data: DataSetOpener | None = None) -> None:
        self.open_data = open_data
        #: Presentation contexts a message may use (``None``: any); a PDV on another one is a
        #: :class:`DimseError` at once, before anything of it is kept.
        self.accepted_contexts: Container[int] | None = None
        #: The largest command set accepted (``None``: no limit).
        self.max_command_bytes: int | None = None
        self._context_id: int | None = None
        self._command_parts: list[bytes] = []
        self._command_size = 0
        self._command: dict[str, object] | None = None
        self._writer: DataSetWriter | None = None
        # Kept only to explain a stray data fragment in the error message.
        self._last_had_no_dataset: str | None = None

    @property
    def in_progress(self) -> bool:
        """True while part of a message has been received but not all of it."""
        return self._context_id is not None

    def feed(self, pdu: PDataTF) -> list[DimseMessage]:
        """Take one P-DATA-TF; return the messages it completed (often none, rarely several)."""
        done: list[DimseMessage] = []
        for pdv in pdu.pdvs:
            msg = self._feed_pdv(pdv)
            if msg is not None:
                done.append(msg)
        return done

    def abandon(self) -> None:
        """The association ended: a message in progress will never complete."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.discard()
        self._context_id = None
        self._command = None
        self._command_parts = []
        self._command_size = 0

    def _feed_pdv(self, pdv: PresentationDataValue) -> DimseMessage | None:
        if self._context_id is None:
            accepted = self.accepted_contexts
            if accepted is not None and pdv.context_id not in accepted:
                raise DimseError(
                    f"PDV on presentation context {pdv.context_id}, which this association "
                    "did not accept"
                )
            self._context_id = pdv.context_id
        elif pdv.context_id != self._context_id:
            raise DimseError(
                f"PDV for presentation context {pdv.context_id} received in the middle of a "
                f"message on presentation context {self._context_id}"
            )

        if self._command is None:
            if not pdv.is_command:
                hint = ""
                if self._last_had_no_dataset is not None:
                    hint = f" (the previous {self._last_had_no_dataset} said it has no data set)"
                raise DimseError(f"data set fragment received before any command{hint}")
            self._command_size += len(pdv.data)
            limit = self.max_command_bytes
            if limit is not None and self._command_size > limit:
                raise DimseError(
                    f"command set of more than {limit} bytes received (fragments without end?)"
                )
            self._command_parts.append(bytes(pdv.data))
            if pdv.is_last:
                return self._command_complete()
            return None

        if pdv.is_command:
            raise DimseError(
                "command fragment received while the data set of the previous command was "
                "still expected"
            )
        writer = self._writer
        assert writer is not None
        if not pdv.is_last:
            writer.write(memoryview(pdv.data))
            return None
        if isinstance(writer, MemoryWriter):
            writer.write_last(memoryview(pdv.data))
        else:
            writer.write(memoryview(pdv.data))
        return self._data_complete()

    def _command_complete(self) -> DimseMessage | None:
        parts = self._command_parts
        self._command_parts = []
        self._command_size = 0
        command = decode_command(parts[0] if len(parts) == 1 else b"".join(parts))
        field = command.get("CommandField")
        if not isinstance(field, int):
            raise DimseError("received command set has no Command Field (0000,0100)")
        data_set_type = command.get("CommandDataSetType")
        if data_set_type is None:
            raise DimseError(
                f"received {command_name(field)} has no Command Data Set Type (0000,0800)"
            )
        context_id = self._context_id
        assert context_id is not None
        if data_set_type != NO_DATASET:
            self._command = command
            chosen = self.open_data(context_id, command) if self.open_data is not None else None
            self._writer = chosen if chosen is not None else MemoryWriter()
            return None
        self._context_id = None
        self._last_had_no_dataset = command_name(field)
        return DimseMessage(context_id, command, None)

    def _data_complete(self) -> DimseMessage:
        writer = self._writer
        command = self._command
        context_id = self._context_id
        assert writer is not None and command is not None and context_id is not None
        self._writer = None
        self._command = None
        self._context_id = None
        self._last_had_no_dataset = None
        data = writer.close()
        return DimseMessage(
            context_id, command, data, writer=None if isinstance(writer, MemoryWriter) else writer
        )
