"""PDU codec (PS3.8 section 9.3): pure functions over bytes, no I/O; the PDU objects themselves
are defined in :mod:`aiodicom.pdu_types` and importable from here.

``encode_pdu`` turns any PDU object into bytes; ``decode_pdu`` takes the bytes of one whole PDU
(6-byte header included) and returns its object, or raises :class:`PDUDecodeError` saying what is
wrong and where. P-DATA-TF values are kept as ``memoryview`` slices of the received buffer so the
data set bytes are not copied while decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from aiodicom.errors import PDUDecodeError
from aiodicom.pdu_types import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    APPLICATION_CONTEXT_NAME,
    CONTEXT_RESULT_TEXT,
    NO_REASON,
    P_DATA_TF,
    PDU,
    PDU_HEADER_LENGTH,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    USER_REJECTION,
    AAbort,
    AReleaseRP,
    AReleaseRQ,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    AsyncOperationsWindow,
    PDataTF,
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
    describe_abort,
    describe_rejection,
)

__all__ = [
    "ABSTRACT_SYNTAX_NOT_SUPPORTED",
    "ACCEPTANCE",
    "APPLICATION_CONTEXT_NAME",
    "A_ABORT",
    "A_ASSOCIATE_AC",
    "A_ASSOCIATE_RJ",
    "A_ASSOCIATE_RQ",
    "A_RELEASE_RP",
    "A_RELEASE_RQ",
    "CONTEXT_RESULT_TEXT",
    "NO_REASON",
    "PDU",
    "PDU_HEADER_LENGTH",
    "P_DATA_TF",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "USER_REJECTION",
    "AAbort",
    "AReleaseRP",
    "AReleaseRQ",
    "AssociateAC",
    "AssociateRJ",
    "AssociateRQ",
    "AsyncOperationsWindow",
    "PDUDecodeError",
    "PDataTF",
    "PresentationContextAC",
    "PresentationContextRQ",
    "PresentationDataValue",
    "RoleSelection",
    "SOPClassCommonExtendedNegotiation",
    "SOPClassExtendedNegotiation",
    "UnknownSubItem",
    "UserIdentityAC",
    "UserIdentityRQ",
    "UserInformation",
    "decode_pdu",
    "describe_abort",
    "describe_rejection",
    "encode_pdata",
    "encode_pdu",
    "pdata_header",
    "pdata_values",
    "read_pdu_header",
]

# --- codec ----------------------------------------------------------------------------------------

_PDU_HEADER = struct.Struct(">BxI")  # PDU type, reserved, PDU length
_ITEM_HEADER = struct.Struct(">BxH")  # item type, reserved, item length
_PDV_HEADER = struct.Struct(">IBB")  # item length, context ID, message control header
# A P-DATA-TF PDU holding one PDV: the PDU header, then the PDV item header.
_ONE_PDV_HEADER = struct.Struct(">BxIIBB")
_ASSOCIATE_FIXED = struct.Struct(">Hxx16s16s32x")  # version, called AE, calling AE
_FOUR_BYTES = struct.Struct(">BBBB")
_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_ASYNC_WINDOW = struct.Struct(">HH")
_CONTEXT_FIXED = struct.Struct(">BxBx")  # context ID, reserved, result (AC only), reserved

_ASSOCIATE_VARIABLE_START = PDU_HEADER_LENGTH + _ASSOCIATE_FIXED.size  # 74
_MAX_ITEM_LENGTH = 0xFFFF

# Item and sub-item types (PS3.8 section 9.3.2 and Annex D, PS3.7 Annex D.3.3)
_APPLICATION_CONTEXT = 0x10
_PRESENTATION_CONTEXT_RQ = 0x20
_PRESENTATION_CONTEXT_AC = 0x21
_ABSTRACT_SYNTAX = 0x30
_TRANSFER_SYNTAX = 0x40
_USER_INFORMATION = 0x50
_MAXIMUM_LENGTH = 0x51
_IMPLEMENTATION_CLASS_UID = 0x52
_ASYNC_OPERATIONS_WINDOW = 0x53
_ROLE_SELECTION = 0x54
_IMPLEMENTATION_VERSION_NAME = 0x55
_SOP_CLASS_EXTENDED = 0x56
_SOP_CLASS_COMMON_EXTENDED = 0x57
_USER_IDENTITY_RQ = 0x58
_USER_IDENTITY_AC = 0x59

_KNOWN_USER_SUB_ITEMS = frozenset(range(_MAXIMUM_LENGTH, _USER_IDENTITY_AC + 1))

_ITEM_NAMES = {
    _APPLICATION_CONTEXT: "application context item",
    _PRESENTATION_CONTEXT_RQ: "presentation context item",
    _PRESENTATION_CONTEXT_AC: "presentation context item",
    _ABSTRACT_SYNTAX: "abstract syntax sub-item",
    _TRANSFER_SYNTAX: "transfer syntax sub-item",
    _USER_INFORMATION: "user information item",
    _MAXIMUM_LENGTH: "maximum length sub-item",
    _IMPLEMENTATION_CLASS_UID: "implementation class UID sub-item",
    _ASYNC_OPERATIONS_WINDOW: "asynchronous operations window sub-item",
    _ROLE_SELECTION: "SCP/SCU role selection sub-item",
    _IMPLEMENTATION_VERSION_NAME: "implementation version name sub-item",
    _SOP_CLASS_EXTENDED: "SOP class extended negotiation sub-item",
    _SOP_CLASS_COMMON_EXTENDED: "SOP class common extended negotiation sub-item",
    _USER_IDENTITY_RQ: "user identity sub-item (RQ)",
    _USER_IDENTITY_AC: "user identity sub-item (AC)",
}

_PDU_NAMES = {
    A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    P_DATA_TF: "P-DATA-TF",
    A_RELEASE_RQ: "A-RELEASE-RQ",
    A_RELEASE_RP: "A-RELEASE-RP",
    A_ABORT: "A-ABORT",
}


def _item_name(item_type: int) -> str:
    return _ITEM_NAMES.get(item_type, f"item of type 0x{item_type:02X}")


# --- encoding helpers


def _ascii(text: str, what: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not ASCII") from None


def _ae_title(title: str, what: str) -> bytes:
    raw = _ascii(title, what)
    if len(raw) > 16:
        raise ValueError(f"{what} {title!r} is longer than 16 characters")
    return raw.ljust(16, b" ")


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > _MAX_ITEM_LENGTH:
        raise ValueError(
            f"{_item_name(item_type)} would be {len(value)} bytes long, "
            f"more than the {_MAX_ITEM_LENGTH} an item length can express"
        )
    return _ITEM_HEADER.pack(item_type, len(value)) + value


def _prefixed(value: bytes, what: str) -> bytes:
    """A field preceded by its own 2-byte length, as used inside several sub-items."""
    if len(value) > _MAX_ITEM_LENGTH:
        raise ValueError(f"{what} is {len(value)} bytes long, more than 65535")
    return _UINT16.pack(len(value)) + value


def _encode_user_information(info: UserInformation) -> bytes:
    items: list[tuple[int, bytes]] = []
    if info.max_pdu_length is not None:
        items.append((_MAXIMUM_LENGTH, _UINT32.pack(info.max_pdu_length)))
    if info.implementation_class_uid is not None:
        uid = _ascii(info.implementation_class_uid, "implementation class UID")
        items.append((_IMPLEMENTATION_CLASS_UID, uid))
    if info.async_operations_window is not None:
        window = info.async_operations_window
        items.append(
            (
                _ASYNC_OPERATIONS_WINDOW,
                _ASYNC_WINDOW.pack(window.max_operations_invoked, window.max_operations_performed),
            )
        )
    for role in info.role_selections:
        uid = _prefixed(_ascii(role.sop_class_uid, "role selection SOP class UID"), "SOP class UID")
        items.append((_ROLE_SELECTION, uid + bytes((role.scu_role, role.scp_role))))
    if info.implementation_version_name is not None:
        name = _ascii(info.implementation_version_name, "implementation version name")
        if len(name) > 16:
            raise ValueError(
                f"implementation version name {info.implementation_version_name!r} "
                "is longer than 16 characters"
            )
        items.append((_IMPLEMENTATION_VERSION_NAME, name))
    for ext in info.sop_class_extended:
        uid = _ascii(ext.sop_class_uid, "extended negotiation SOP class UID")
        value = _prefixed(uid, "SOP class UID") + bytes(ext.application_information)
        items.append((_SOP_CLASS_EXTENDED, value))
    for common in info.sop_class_common_extended:
        related = b"".join(
            _prefixed(_ascii(uid, "related general SOP class UID"), "related general SOP class UID")
            for uid in common.related_general_sop_class_uids
        )
        value = b"".join(
            (
                _prefixed(_ascii(common.sop_class_uid, "SOP class UID"), "SOP class UID"),
                _prefixed(
                    _ascii(common.service_class_uid, "service class UID"), "service class UID"
                ),
                _prefixed(related, "related general SOP class identification"),
            )
        )
        items.append((_SOP_CLASS_COMMON_EXTENDED, value))
    if info.user_identity_rq is not None:
        identity = info.user_identity_rq
        value = b"".join(
            (
                bytes((identity.identity_type, identity.positive_response_requested)),
                _prefixed(bytes(identity.primary_field), "user identity primary field"),
                _prefixed(bytes(identity.secondary_field), "user identity secondary field"),
            )
        )
        items.append((_USER_IDENTITY_RQ, value))
    if info.user_identity_ac is not None:
        response = bytes(info.user_identity_ac.server_response)
        items.append((_USER_IDENTITY_AC, _prefixed(response, "user identity server response")))
    # Known sub-items go in ascending type order (PS3.8 9.3.2.3: order has no significance, but
    # some older peers expect it); unknown ones follow in the order they came in.
    for unknown in info.unknown_items:
        if unknown.item_type in _KNOWN_USER_SUB_ITEMS:
            raise ValueError(
                f"UnknownSubItem of type 0x{unknown.item_type:02X} would be read back as a "
                f"{_item_name(unknown.item_type)}: use its own field"
            )
        items.append((unknown.item_type, bytes(unknown.data)))
    encoded = b"".join(_item(item_type, value) for item_type, value in items)
    return _item(_USER_INFORMATION, encoded)


def _encode_context_rq(context: PresentationContextRQ) -> bytes:
    if not context.transfer_syntaxes:
        raise ValueError(f"presentation context {context.context_id} offers no transfer syntax")
    parts = [
        _CONTEXT_FIXED.pack(context.context_id, 0),
        _item(_ABSTRACT_SYNTAX, _ascii(context.abstract_syntax, "abstract syntax")),
    ]
    parts.extend(
        _item(_TRANSFER_SYNTAX, _ascii(syntax, "transfer syntax"))
        for syntax in context.transfer_syntaxes
    )
    return _item(_PRESENTATION_CONTEXT_RQ, b"".join(parts))


def _encode_context_ac(context: PresentationContextAC) -> bytes:
    if context.transfer_syntax is None:
        if context.result == ACCEPTANCE:
            raise ValueError(
                f"accepted presentation context {context.context_id} has no transfer syntax"
            )
        # The sub-item is still required; its value is not significant for a rejection.
        syntax = b""
    else:
        syntax = _ascii(context.transfer_syntax, "transfer syntax")
    value = _CONTEXT_FIXED.pack(context.context_id, context.result) + _item(
        _TRANSFER_SYNTAX, syntax
    )
    return _item(_PRESENTATION_CONTEXT_AC, value)


def _encode_associate(pdu_type: int, pdu: AssociateRQ | AssociateAC) -> bytes:
    parts = [
        _ASSOCIATE_FIXED.pack(
            pdu.protocol_version,
            _ae_title(pdu.called_ae_title, "called AE title"),
            _ae_title(pdu.calling_ae_title, "calling AE title"),
        ),
        _item(
            _APPLICATION_CONTEXT,
            _ascii(pdu.application_context_name, "application context name"),
        ),
    ]
    if isinstance(pdu, AssociateRQ):
        parts.extend(_encode_context_rq(context) for context in pdu.presentation_contexts)
    else:
        parts.extend(_encode_context_ac(context) for context in pdu.presentation_contexts)
    parts.append(_encode_user_information(pdu.user_information))
    body = b"".join(parts)
    return _PDU_HEADER.pack(pdu_type, len(body)) + body


def encode_pdata(pdvs: Iterable[PresentationDataValue]) -> bytes:
    """Encode a P-DATA-TF PDU holding ``pdvs``: the fast path for bulk data.

    The PDV values are copied exactly once, into the returned bytes.
    """
    pack_pdv = _PDV_HEADER.pack
    parts: list[bytes | memoryview] = [b""]  # placeholder for the PDU header
    total = 0
    try:
        for pdv in pdvs:
            data = pdv.data
            # len() of a memoryview counts items, not bytes, when its format is not "B".
            size = data.nbytes if isinstance(data, memoryview) else len(data)
            control = (2 if pdv.is_last else 0) | (1 if pdv.is_command else 0)
            parts.append(pack_pdv(size + 2, pdv.context_id, control))
            parts.append(data)
            total += size + 6
        if len(parts) == 1:
            raise ValueError("a P-DATA-TF PDU needs at least one presentation data value")
        parts[0] = _PDU_HEADER.pack(P_DATA_TF, total)
    except struct.error as exc:
        raise ValueError(f"cannot encode P-DATA-TF: {exc}") from None
    return b"".join(parts)


def pdata_header(context_id: int, is_command: bool, is_last: bool, size: int) -> bytes:
    """The 12 bytes before a fragment of ``size`` bytes in a P-DATA-TF PDU holding that one
    PDV: ``pdata_header(...) + fragment`` is what :func:`encode_pdata` makes of it."""
    control = (2 if is_last else 0) | (1 if is_command else 0)
    try:
        return _ONE_PDV_HEADER.pack(P_DATA_TF, size + 6, size + 2, context_id, control)
    except struct.error as exc:
        raise ValueError(f"cannot encode P-DATA-TF: {exc}") from None


def _encode_pdu(pdu: PDU) -> bytes:
    if isinstance(pdu, PDataTF):
        return encode_pdata(pdu.pdvs)
    if isinstance(pdu, AssociateRQ):
        return _encode_associate(A_ASSOCIATE_RQ, pdu)
    if isinstance(pdu, AssociateAC):
        return _encode_associate(A_ASSOCIATE_AC, pdu)
    if isinstance(pdu, AssociateRJ):
        fields = (0, pdu.result, pdu.source, pdu.reason)
        return _PDU_HEADER.pack(A_ASSOCIATE_RJ, 4) + _FOUR_BYTES.pack(*fields)
    if isinstance(pdu, AReleaseRQ):
        return _PDU_HEADER.pack(A_RELEASE_RQ, 4) + bytes(4)
    if isinstance(pdu, AReleaseRP):
        return _PDU_HEADER.pack(A_RELEASE_RP, 4) + bytes(4)
    if isinstance(pdu, AAbort):
        return _PDU_HEADER.pack(A_ABORT, 4) + _FOUR_BYTES.pack(0, 0, pdu.source, pdu.reason)
    raise TypeError(f"not a PDU: {pdu!r}")


def encode_pdu(pdu: PDU) -> bytes:
    """Encode a PDU (header included).

    Raises ``ValueError`` for values that cannot be encoded (an AE title longer than 16
    characters, non-ASCII text, a number too large for its field...) and ``TypeError`` for
    an object that is not a PDU.
    """
    try:
        return _encode_pdu(pdu)
    except struct.error as exc:
        raise ValueError(f"cannot encode {type(pdu).__name__}: {exc}") from None


# --- decoding helpers
# Offsets are always absolute (from the PDU's first byte) so errors can say where they are.


def _iter_items(
    buf: memoryview, start: int, end: int, container: str
) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(item_type, item_offset, value_start, value_end)`` for the items in
    ``buf[start:end]``."""
    pos = start
    while pos < end:
        if end - pos < _ITEM_HEADER.size:
            raise PDUDecodeError(
                f"{end - pos} byte(s) left at the end of {container}, too few for an item header",
                pos,
            )
        item_type, length = _ITEM_HEADER.unpack_from(buf, pos)
        value_start = pos + _ITEM_HEADER.size
        value_end = value_start + length
        if value_end > end:
            raise PDUDecodeError(
                f"{_item_name(item_type)} length {length} runs past end of {container}", pos + 2
            )
        yield item_type, pos, value_start, value_end
        pos = value_end


def _text(buf: memoryview, start: int, end: int, what: str) -> str:
    raw = bytes(buf[start:end])
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PDUDecodeError(
            f"{what} is not ASCII (byte 0x{raw[exc.start]:02X})", start + exc.start
        ) from None


def _uid(buf: memoryview, start: int, end: int, what: str) -> str:
    # Some peers pad UIDs to even length with NUL (the data set rule) or with spaces.
    return _text(buf, start, end, what).rstrip("\x00 ")


def _lenient_text(buf: memoryview, start: int, end: int) -> str:
    # For informative fields nobody must test: a stray byte there is no reason to abort.
    return bytes(buf[start:end]).decode("ascii", errors="replace").strip("\x00 ")


def _read_prefixed(buf: memoryview, pos: int, end: int, what: str, container: str) -> int:
    """Check the 2-byte-length-prefixed field at ``pos`` fits before ``end``; return where its
    value ends."""
    if end - pos < 2:
        raise PDUDecodeError(f"{container} too short for the length of its {what}", pos)
    length: int = _UINT16.unpack_from(buf, pos)[0]
    value_end = pos + 2 + length
    if value_end > end:
        raise PDUDecodeError(f"{what} length {length} runs past end of {container}", pos)
    return value_end


def _once(seen: object, item_type: int, container: str, offset: int) -> None:
    if seen is not None:
        raise PDUDecodeError(f"more than one {_item_name(item_type)} in {container}", offset)


def _decode_user_information(buf: memoryview, start: int, end: int) -> UserInformation:
    container = "user information item"
    max_pdu_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_window: AsyncOperationsWindow | None = None
    roles: list[RoleSelection] = []
    extended: list[SOPClassExtendedNegotiation] = []
    common_extended: list[SOPClassCommonExtendedNegotiation] = []
    identity_rq: UserIdentityRQ | None = None
    identity_ac: UserIdentityAC | None = None
    unknown: list[UnknownSubItem] = []

    for item_type, offset, vstart, vend in _iter_items(buf, start, end, container):
        size = vend - vstart
        name = _item_name(item_type)
        if item_type == _MAXIMUM_LENGTH:
            _once(max_pdu_length, item_type, container, offset)
            if size != 4:
                raise PDUDecodeError(f"{name} length is {size}, expected 4", offset + 2)
            (max_pdu_length,) = _UINT32.unpack_from(buf, vstart)
        elif item_type == _IMPLEMENTATION_CLASS_UID:
            _once(implementation_class_uid, item_type, container, offset)
            implementation_class_uid = _uid(buf, vstart, vend, "implementation class UID")
        elif item_type == _ASYNC_OPERATIONS_WINDOW:
            _once(async_window, item_type, container, offset)
            if size != 4:
                raise PDUDecodeError(f"{name} length is {size}, expected 4", offset + 2)
            invoked, performed = _ASYNC_WINDOW.unpack_from(buf, vstart)
            async_window = AsyncOperationsWindow(invoked, performed)
        elif item_type == _ROLE_SELECTION:
            uid_end = _read_prefixed(buf, vstart, vend, "SOP class UID", name)
            if vend - uid_end != 2:
                raise PDUDecodeError(
                    f"{name} has {vend - uid_end} byte(s) after its SOP class UID, expected 2",
                    uid_end,
                )
            uid = _uid(buf, vstart + 2, uid_end, "role selection SOP class UID")
            roles.append(RoleSelection(uid, bool(buf[uid_end]), bool(buf[uid_end + 1])))
        elif item_type == _IMPLEMENTATION_VERSION_NAME:
            _once(implementation_version_name, item_type, container, offset)
            implementation_version_name = _lenient_text(buf, vstart, vend)
        elif item_type == _SOP_CLASS_EXTENDED:
            uid_end = _read_prefixed(buf, vstart, vend, "SOP class UID", name)
            uid = _uid(buf, vstart + 2, uid_end, "extended negotiation SOP class UID")
            extended.append(SOPClassExtendedNegotiation(uid, bytes(buf[uid_end:vend])))
        elif item_type == _SOP_CLASS_COMMON_EXTENDED:
            common_extended.append(_decode_common_extended(buf, vstart, vend))
        elif item_type == _USER_IDENTITY_RQ:
            _once(identity_rq, item_type, container, offset)
            if size < 2:
                raise PDUDecodeError(f"{name} length {size} is too short", offset + 2)
            primary_end = _read_prefixed(buf, vstart + 2, vend, "primary field", name)
            secondary_end = _read_prefixed(buf, primary_end, vend, "secondary field", name)
            if secondary_end != vend:
                raise PDUDecodeError(
                    f"{vend - secondary_end} unexpected byte(s) after the secondary field "
                    f"of {name}",
                    secondary_end,
                )
            identity_rq = UserIdentityRQ(
                identity_type=buf[vstart],
                positive_response_requested=bool(buf[vstart + 1]),
                primary_field=bytes(buf[vstart + 4 : primary_end]),
                secondary_field=bytes(buf[primary_end + 2 : secondary_end]),
            )
        elif item_type == _USER_IDENTITY_AC:
            _once(identity_ac, item_type, container, offset)
            response_end = _read_prefixed(buf, vstart, vend, "server response", name)
            if response_end != vend:
                raise PDUDecodeError(
                    f"{vend - response_end} unexpected byte(s) after the server response of {name}",
                    response_end,
                )
            identity_ac = UserIdentityAC(bytes(buf[vstart + 2 : response_end]))
        else:
            # PS3.8 D.2: unrecognized sub-items shall be ignored, not rejected.
            unknown.append(UnknownSubItem(item_type, bytes(buf[vstart:vend])))

    return UserInformation(
        max_pdu_length=max_pdu_length,
        implementation_class_uid=implementation_class_uid,
        implementation_version_name=implementation_version_name,
        async_operations_window=async_window,
        role_selections=tuple(roles),
        sop_class_extended=tuple(extended),
        sop_class_common_extended=tuple(common_extended),
        user_identity_rq=identity_rq,
        user_identity_ac=identity_ac,
        unknown_items=tuple(unknown),
    )


def _decode_common_extended(
    buf: memoryview, start: int, end: int
) -> SOPClassCommonExtendedNegotiation:
    name = _item_name(_SOP_CLASS_COMMON_EXTENDED)
    sop_end = _read_prefixed(buf, start, end, "SOP class UID", name)
    service_end = _read_prefixed(buf, sop_end, end, "service class UID", name)
    related: list[str] = []
    # The related list length is mandatory, but a peer leaving it out has an empty list.
    if service_end < end:
        related_end = _read_prefixed(
            buf, service_end, end, "related general SOP class identification", name
        )
        # Bytes after the list are left alone: the sub-item version field exists so later
        # editions can append fields.
        pos = service_end + 2
        while pos < related_end:
            uid_end = _read_prefixed(
                buf,
                pos,
                related_end,
                "related general SOP class UID",
                "related general SOP class identification",
            )
            related.append(_uid(buf, pos + 2, uid_end, "related general SOP class UID"))
            pos = uid_end
    return SOPClassCommonExtendedNegotiation(
        sop_class_uid=_uid(buf, start + 2, sop_end, "SOP class UID"),
        service_class_uid=_uid(buf, sop_end + 2, service_end, "service class UID"),
        related_general_sop_class_uids=tuple(related),
    )


def _decode_context_rq(buf: memoryview, offset: int, start: int, end: int) -> PresentationContextRQ:
    container = "presentation context item"
    if end - start < _CONTEXT_FIXED.size:
        raise PDUDecodeError(
            f"{container} length {end - start} is shorter than its 4-byte fixed part", offset + 2
        )
    context_id = buf[start]
    abstract_syntax: str | None = None
    transfer_syntaxes: list[str] = []
    for item_type, sub_offset, vstart, vend in _iter_items(buf, start + 4, end, container):
        if item_type == _ABSTRACT_SYNTAX:
            _once(abstract_syntax, item_type, container, sub_offset)
            abstract_syntax = _uid(buf, vstart, vend, "abstract syntax")
        elif item_type == _TRANSFER_SYNTAX:
            transfer_syntaxes.append(_uid(buf, vstart, vend, "transfer syntax"))
        # Other sub-item types are skipped (PS3.8 9.3.1).
    if abstract_syntax is None:
        raise PDUDecodeError(
            f"presentation context {context_id} has no abstract syntax sub-item", offset
        )
    if not transfer_syntaxes:
        raise PDUDecodeError(
            f"presentation context {context_id} has no transfer syntax sub-item", offset
        )
    return PresentationContextRQ(context_id, abstract_syntax, tuple(transfer_syntaxes))


def _decode_context_ac(buf: memoryview, offset: int, start: int, end: int) -> PresentationContextAC:
    container = "presentation context item"
    if end - start < _CONTEXT_FIXED.size:
        raise PDUDecodeError(
            f"{container} length {end - start} is shorter than its 4-byte fixed part", offset + 2
        )
    context_id, result = _CONTEXT_FIXED.unpack_from(buf, start)
    if result != ACCEPTANCE:
        # PS3.8 9.3.3.2: the transfer syntax of a rejected context "shall not be tested";
        # peers leave it out, send it empty or echo a proposal. Keep it only if readable.
        syntax: str | None = None
        try:
            for item_type, _, vstart, vend in _iter_items(buf, start + 4, end, container):
                if item_type == _TRANSFER_SYNTAX:
                    syntax = _uid(buf, vstart, vend, "transfer syntax") or None
                    break
        except PDUDecodeError:
            syntax = None
        return PresentationContextAC(context_id, result, syntax)
    accepted: str | None = None
    for item_type, sub_offset, vstart, vend in _iter_items(buf, start + 4, end, container):
        if item_type == _TRANSFER_SYNTAX:
            _once(accepted, item_type, container, sub_offset)
            accepted = _uid(buf, vstart, vend, "transfer syntax")
    if accepted is None:
        raise PDUDecodeError(
            f"accepted presentation context {context_id} has no transfer syntax sub-item", offset
        )
    return PresentationContextAC(context_id, result, accepted)


def _decode_associate(buf: memoryview, pdu_type: int, end: int) -> AssociateRQ | AssociateAC:
    is_rq = pdu_type == A_ASSOCIATE_RQ
    container = f"{_PDU_NAMES[pdu_type]} PDU"
    if end < _ASSOCIATE_VARIABLE_START:
        raise PDUDecodeError(
            f"{container} length {end - PDU_HEADER_LENGTH} is shorter than its "
            f"{_ASSOCIATE_FIXED.size}-byte fixed part",
            2,
        )
    (version,) = _UINT16.unpack_from(buf, PDU_HEADER_LENGTH)
    if is_rq:
        called = _text(buf, 10, 26, "called AE title").strip("\x00 ")
        calling = _text(buf, 26, 42, "calling AE title").strip("\x00 ")
    else:
        # PS3.8 9.3.3: the acceptor echoes these and they "shall not be tested".
        called = _lenient_text(buf, 10, 26)
        calling = _lenient_text(buf, 26, 42)

    application_context: str | None = None
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    user_information: UserInformation | None = None
    context_type = _PRESENTATION_CONTEXT_RQ if is_rq else _PRESENTATION_CONTEXT_AC
    for item_type, offset, vstart, vend in _iter_items(
        buf, _ASSOCIATE_VARIABLE_START, end, container
    ):
        if item_type == _APPLICATION_CONTEXT:
            _once(application_context, item_type, container, offset)
            application_context = _uid(buf, vstart, vend, "application context name")
        elif item_type == context_type:
            if is_rq:
                rq_contexts.append(_decode_context_rq(buf, offset, vstart, vend))
            else:
                ac_contexts.append(_decode_context_ac(buf, offset, vstart, vend))
        elif item_type == _USER_INFORMATION:
            _once(user_information, item_type, container, offset)
            user_information = _decode_user_information(buf, vstart, vend)
        # PS3.8 9.3.1: items of unrecognized types shall be ignored and skipped.
    if application_context is None:
        raise PDUDecodeError(
            f"{container} has no application context item", _ASSOCIATE_VARIABLE_START
        )
    if user_information is None:
        user_information = UserInformation()
    if is_rq:
        return AssociateRQ(
            called_ae_title=called,
            calling_ae_title=calling,
            presentation_contexts=tuple(rq_contexts),
            user_information=user_information,
            application_context_name=application_context,
            protocol_version=version,
        )
    return AssociateAC(
        called_ae_title=called,
        calling_ae_title=calling,
        presentation_contexts=tuple(ac_contexts),
        user_information=user_information,
        application_context_name=application_context,
        protocol_version=version,
    )


def _decode_pdata(buf: memoryview, end: int) -> PDataTF:
    return PDataTF(tuple(
        PresentationDataValue(context_id, bool(control & 1), bool(control & 2), value)
        for context_id, control, value in pdata_values(buf, end)
    ))


def pdata_values(buf: memoryview, end: int) -> list[tuple[int, int, memoryview]]:
    """The values of the P-DATA-TF PDU ``buf[:end]`` (header included) as (context ID, message
    control header, value view), checked as :func:`decode_pdu` checks them."""
    unpack = _PDV_HEADER.unpack_from
    values: list[tuple[int, int, memoryview]] = []
    pos = PDU_HEADER_LENGTH
    while pos < end:
        if end - pos < _PDV_HEADER.size:
            raise PDUDecodeError(
                f"{end - pos} byte(s) left at the end of P-DATA-TF PDU, too few for a "
                "presentation data value item header",
                pos,
            )
        length, context_id, control = unpack(buf, pos)
        if length < 2:
            raise PDUDecodeError(
                f"presentation data value item length {length} is too short for its "
                "context ID and message control header",
                pos,
            )
        value_end = pos + 4 + length
        if value_end > end:
            raise PDUDecodeError(
                f"presentation data value item length {length} runs past end of P-DATA-TF PDU",
                pos,
            )
        values.append((context_id, control, buf[pos + 6 : value_end]))
        pos = value_end
    if not values:
        raise PDUDecodeError("P-DATA-TF PDU holds no presentation data value item", 2)
    return values


def _decode_fixed4(buf: memoryview, pdu_type: int, length: int) -> PDU:
    if length != 4:
        raise PDUDecodeError(f"{_PDU_NAMES[pdu_type]} PDU length is {length}, expected 4", 2)
    if pdu_type == A_RELEASE_RQ:
        return AReleaseRQ()
    if pdu_type == A_RELEASE_RP:
        return AReleaseRP()
    _, second, source, reason = _FOUR_BYTES.unpack_from(buf, PDU_HEADER_LENGTH)
    if pdu_type == A_ASSOCIATE_RJ:
        return AssociateRJ(result=second, source=source, reason=reason)
    return AAbort(source=source, reason=reason)


def read_pdu_header(header: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Return ``(pdu_type, length)`` from the first 6 bytes of a PDU (more bytes are ignored).

    ``length`` counts the bytes after the header. An unknown PDU type raises
    :class:`PDUDecodeError` at once, so a reader never waits for the body of garbage.
    """
    if len(header) < PDU_HEADER_LENGTH:
        raise PDUDecodeError(
            f"PDU header needs {PDU_HEADER_LENGTH} bytes, got {len(header)}", len(header)
        )
    pdu_type, length = _PDU_HEADER.unpack_from(header, 0)
    if pdu_type not in _PDU_NAMES:
        raise PDUDecodeError(f"unknown PDU type 0x{pdu_type:02X}", 0)
    return pdu_type, length


def decode_pdu(data: bytes | bytearray | memoryview) -> PDU:
    """Decode exactly one whole PDU (header included); trailing bytes are an error.

    The ``data`` of decoded P-DATA-TF values are memoryview slices of ``data``: a bytearray
    passed in must not be resized or reused while they are alive.
    """
    buf = memoryview(data)
    if buf.format != "B" or buf.ndim != 1:
        buf = buf.cast("B")
    pdu_type, length = read_pdu_header(buf)
    end = len(buf)
    if PDU_HEADER_LENGTH + length > end:
        raise PDUDecodeError(
            f"{_PDU_NAMES[pdu_type]} PDU length {length} runs past end of data "
            f"({end - PDU_HEADER_LENGTH} bytes after the header)",
            2,
        )
    if PDU_HEADER_LENGTH + length < end:
        raise PDUDecodeError(
            f"{end - PDU_HEADER_LENGTH - length} trailing byte(s) after the "
            f"{_PDU_NAMES[pdu_type]} PDU of length {length}",
            PDU_HEADER_LENGTH + length,
        )
    if pdu_type == P_DATA_TF:
        return _decode_pdata(buf, end)
    if pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
        return _decode_associate(buf, pdu_type, end)
    return _decode_fixed4(buf, pdu_type, length)
